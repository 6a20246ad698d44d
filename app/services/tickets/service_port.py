"""The tickets context's only door to customer service: who on shift receives an escalation."""


def escalation_picker(at):
    """A function (candidates, loads) -> (staff_no, rule, inputs, outcome, policy_version) choosing who receives
    an escalation at ``at`` (see service.workforce.escalation_picker)."""
    from app.services.service import workforce
    return workforce.escalation_picker(at)
