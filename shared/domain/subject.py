"""Does a record belong to the data subject? Pure.

identity: an identity field of the kind (catalog ``identityFields``) names the subject: a GUID compared
          with the subject's objectId, anything else with the subject's UPN or one of their ``emails``
          aliases, all case-insensitively. Never by display name.
owner:    for a subject-scoped delete, the kind's ``ownerFields`` (v2: ``systemData.createdBy``; a compute
          instance: its assigned user) name the subject; a record they only modified is not theirs to delete.
parent:   the record hangs off an attributed record (a run's artifacts and metrics, a pipeline run's
          pipeline objects); decided by the traversal, which knows the parents.
mention:  some string value holds the objectId, the UPN or an alias as a whole token (not inside a longer token),
          e.g. a tag or a description. Shown to a reviewer as such; never enough for a deletion.
"""

from __future__ import annotations

import re
from typing import Any

from shared.domain.catalog import Catalog, field_values
from shared.domain.contract import GUID, Subject

_GUID = re.compile(GUID)
# a token boundary: anything that could not continue a GUID or a UPN
_EDGE = r"A-Za-z0-9._%+@-"


class SubjectMatcher:
    def __init__(self, subject: Subject, catalog: Catalog) -> None:
        self.subject = subject
        self.catalog = catalog
        self.object_id = subject.objectId.lower()
        self.upn = subject.upn.lower() if subject.upn else None
        self.names = frozenset(n.lower() for n in [subject.upn, *(subject.emails or [])] if n)
        tokens = [re.escape(subject.objectId)] + [re.escape(n) for n in sorted(self.names, key=len, reverse=True)]
        # a sentence's full stop ends a token; a dot followed by more of a name does not
        self._mention = re.compile(rf"(?<![{_EDGE}])(?:{'|'.join(tokens)})(?![A-Za-z0-9_%+@-])(?!\.[A-Za-z0-9])", re.IGNORECASE)

    def names_subject(self, value: Any) -> bool:
        if not isinstance(value, str) or not value:
            return False
        text = value.strip().lower()
        if _GUID.match(text):
            return text == self.object_id
        return text in self.names

    def by_identity(self, kind: str, record: Any) -> bool:
        fields = self.catalog.kinds[kind].identityFields
        return any(self.names_subject(v) for path in fields for v in field_values(record, path))

    def by_owner(self, kind: str, record: Any) -> bool:
        """The record is the subject's to delete: its owner fields name them."""
        fields = self.catalog.kinds[kind].owner_fields
        return any(self.names_subject(v) for path in fields for v in field_values(record, path))

    def by_mention(self, record: Any) -> bool:
        stack = [record]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if self._mention.search(item):
                    return True
            elif isinstance(item, dict):
                stack.extend(item.values())
                stack.extend(k for k in item if isinstance(k, str))
            elif isinstance(item, list):
                stack.extend(item)
        return False

    def match(self, kind: str, record: Any, *, inherited: bool) -> str | None:
        if self.by_identity(kind, record):
            return "identity"
        if inherited:
            return "parent"
        if self.by_mention(record):
            return "mention"
        return None
