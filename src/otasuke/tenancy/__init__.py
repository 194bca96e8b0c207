"""チーム (REQ-TEAM): provider, resellers, partners, customers, users and roles.

Every read of customer data goes through :mod:`otasuke.tenancy.scope`, which
scopes the query to what the viewer may see and answers "absent" and "not
yours" with the same :class:`~otasuke.errors.NotFound`.
"""
