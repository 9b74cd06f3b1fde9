"""Who is calling: an `Identity`, derived from a client certificate or a token.

A certificate's CN is the user and its O entries are the groups, as in
Kubernetes. The role follows from them:

    CN=system:node:<name>, O=system:nodes   -> node (may touch only its own Node and pods)
    CN=system:scheduler                     -> scheduler (read, bind)
    O=system:masters or system:controllers  -> admin
    O=cowpod:admin / cowpod:edit / cowpod:view -> that role (certificates an admin issues to people)
    CN=system:anonymous                     -> anonymous (the shared transport certificate)
    anything else                           -> none: authenticated, allowed nothing

A bearer token carries its role in its stored record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cowpod.pki import (
    ANONYMOUS_USER,
    CONTROLLERS_GROUP,
    MASTERS_GROUP,
    NODE_USER_PREFIX,
    NODES_GROUP,
    SCHEDULER_USER,
    UNAUTHENTICATED_GROUP,
    Subject,
)


class Role(enum.StrEnum):
    ADMIN = "admin"
    EDIT = "edit"
    VIEW = "view"
    NODE = "node"
    SCHEDULER = "scheduler"
    BOOTSTRAP = "bootstrap"
    ANONYMOUS = "anonymous"
    NONE = "none"


class Via(enum.StrEnum):
    CERTIFICATE = "certificate"
    TOKEN = "token"
    INSECURE = "insecure"


_GROUP_ROLES = {
    MASTERS_GROUP: Role.ADMIN,
    CONTROLLERS_GROUP: Role.ADMIN,
    "cowpod:admin": Role.ADMIN,
    "cowpod:edit": Role.EDIT,
    "cowpod:view": Role.VIEW,
}
# The strongest role wins when a certificate names several groups.
_RANK = [Role.ADMIN, Role.EDIT, Role.VIEW]


@dataclass(frozen=True)
class Identity:
    user: str
    role: Role
    groups: tuple[str, ...] = ()
    via: Via = Via.CERTIFICATE
    node_name: str = ""

    @property
    def authenticated(self) -> bool:
        return self.role is not Role.ANONYMOUS

    def describe(self) -> str:
        return f"{self.user!r} (role {self.role.value}, by {self.via.value})"


ANONYMOUS = Identity(ANONYMOUS_USER, Role.ANONYMOUS, (UNAUTHENTICATED_GROUP,))
INSECURE = Identity("system:insecure", Role.ADMIN, (MASTERS_GROUP,), Via.INSECURE)


def identity_from_subject(subject: Subject) -> Identity:
    cn, groups = subject.common_name, subject.organizations
    if cn.startswith(NODE_USER_PREFIX):
        node = cn[len(NODE_USER_PREFIX):]
        if NODES_GROUP in groups and node:
            return Identity(cn, Role.NODE, groups, node_name=node)
        return Identity(cn, Role.NONE, groups)
    if cn == SCHEDULER_USER:
        return Identity(cn, Role.SCHEDULER, groups)
    if cn == ANONYMOUS_USER or UNAUTHENTICATED_GROUP in groups:
        return ANONYMOUS
    roles = {_GROUP_ROLES[g] for g in groups if g in _GROUP_ROLES}
    for role in _RANK:
        if role in roles:
            return Identity(cn, role, groups)
    return Identity(cn, Role.NONE, groups)


def identity_from_token(token_id: str, role: str, description: str = "") -> Identity:
    try:
        r = Role(role)
    except ValueError:
        r = Role.NONE
    if r not in (Role.ADMIN, Role.EDIT, Role.VIEW, Role.BOOTSTRAP):
        r = Role.NONE
    return Identity(f"token:{token_id}", r, (f"cowpod:{r.value}",), Via.TOKEN)
