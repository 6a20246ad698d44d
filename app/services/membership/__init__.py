"""Membership (会员): levels, growth, points, benefits, paid plans, the mall.

The package's public interface, re-exported from ``facade``; the decisions live in ``growth``, ``points``,
``benefits``, ``plans``, ``paid``, ``late`` and ``events``, and read and write member state through
``state`` (the live database) or the simulation's in-memory state.
"""
from app.services.membership.facade import (checkout_benefits, cross_check_errors, history, offers, register,
                                            seed_demo, service_benefits, user_facts, view)

__all__ = ["checkout_benefits", "cross_check_errors", "history", "offers", "register", "seed_demo",
           "service_benefits", "user_facts", "view"]
