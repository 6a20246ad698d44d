"""Server-rendered web workspace (agents, supervisors, operators, the customer chat page): thin views over the
same services and permissions as the API. ``create_app`` registers each blueprint explicitly."""
