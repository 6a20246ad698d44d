"""Tickets (工单): the public interface. Operations and reads live in ``operations``; routing, SLA clocks,
staff and the policy view in their own modules; ``ledger_port``/``membership_port`` are the only doors out."""
from app.models.staff import Staff
from app.services.tickets import routing as tickets_routing, staff
from app.services.tickets.operations import (LIST_FILTERS, add_attachment, allowed_transitions, approvals, approve,
                                             awaiting_approval,
                                             assign, attachments, comment, comments, create, facts_of, get,
                                             get_ticket, history, link_conversation, list_tickets, new_ticket,
                                             notices, register_action, route, serialize, transition, user_view,
                                             workflows)

__all__ = ["LIST_FILTERS", "add_attachment", "allowed_transitions", "approvals", "approve", "assign", "attachments",
           "awaiting_approval", "comment", "comments", "create", "facts_of", "get", "get_ticket", "history",
           "link_conversation", "list_tickets", "new_ticket", "notices", "register", "register_action", "route",
           "seed_demo", "serialize", "transition", "user_view", "workflows"]


def seed_demo():
    """Demo staff for every department (idempotent)."""
    staff.sync_departments()
    demo = [("S-cs-1", "王一线", "cs", ["agent_l1"]), ("S-cs-2", "李二线", "cs", ["agent_l2"]),
            ("S-cs-sup", "赵主管", "cs", ["supervisor"]), ("S-fin-1", "钱财务", "finance", ["finance_specialist"]),
            ("S-fin-sup", "孙主管", "finance", ["supervisor"]), ("S-fin-mgr", "周经理", "finance", ["finance_manager"]),
            ("S-log-1", "吴物流", "logistics", ["logistics_specialist"]),
            ("S-as-1", "郑售后", "aftersales", ["aftersales_specialist"]),
            ("S-mem-1", "冯会员", "membership", ["member_ops"])]
    for staff_no, name, dept, roles in demo:
        if not Staff.select().where(Staff.staff_no == staff_no).exists():
            staff.create_staff({"staff_no": staff_no, "name": name, "department": dept, "roles": roles})


def register():
    """Ticket actions, the tickets cross-check, required kinds/rulesets and the permissions ticket routes and
    workflows check; called once by app.contexts."""
    from app.platform import auth
    tickets_routing.register_actions()
    tickets_routing.register_cross_check()
    auth.declare_permissions(PERMISSIONS)


# Staff permissions ticket routes and the workflow check (roles of a transition are checked as well).
PERMISSIONS = {
    "ticket.create": "open a ticket",
    "ticket.transition": "take workflow transitions (within the roles the workflow allows)",
    "ticket.approve.l1": "decide first-level approvals",
    "ticket.approve.l2": "decide second-level approvals",
    "ticket.assign": "reassign tickets to people, departments and queues",
    "ticket.comment": "comment on tickets and attach files",
    "compensation.issue": "take a transition whose target state pays the user (red packets, vouchers)",
}
