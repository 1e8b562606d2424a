"""Attribution, inheritance and mention matching of subject-scoped requests (pure)."""

from __future__ import annotations

from shared.domain.catalog import load_catalog
from shared.domain.contract import Subject
from shared.domain.subject import SubjectMatcher

JANE = Subject(objectId="aaaaaaaa-0000-0000-0000-000000000001", upn="jane.doe@contoso.com")
OTHER = "aaaaaaaa-0000-0000-0000-000000000007"


def matcher() -> SubjectMatcher:
    return SubjectMatcher(JANE, load_catalog())


def test_identity_fields_name_the_subject_by_guid_or_upn_case_insensitively():
    m = matcher()
    assert m.match("models", {"createdBy": {"userObjectId": JANE.objectId.upper()}}, inherited=False) == "identity"
    assert m.match("runs", {"userId": JANE.objectId}, inherited=False) == "identity"
    assert m.match("workspace", {"systemData": {"createdBy": "Jane.Doe@Contoso.com"}}, inherited=False) == "identity"
    compute = {"properties": {"properties": {"createdBy": {"userId": JANE.objectId}}}}
    assert m.match("computes", compute, inherited=False) == "identity"


def test_a_display_name_never_attributes():
    m = matcher()
    assert m.match("models", {"createdBy": {"userObjectId": OTHER, "userName": "Jane Doe"}}, inherited=False) is None


def test_another_persons_record_is_not_attributed_even_when_inherited_is_false():
    assert matcher().match("runs", {"createdBy": {"userObjectId": OTHER}, "userId": OTHER}, inherited=False) is None


def test_children_of_an_attributed_record_inherit():
    m = matcher()
    assert m.match("artifacts", {"artifactId": "ExperimentRun/dcid.x/outputs/a"}, inherited=True) == "parent"
    # identity outranks inheritance
    assert m.match("pipelineExperiments", {"createdBy": {"userObjectId": JANE.objectId}}, inherited=True) == "identity"


def test_mentions_are_whole_tokens_in_any_string():
    m = matcher()
    assert m.match("datastores", {"tags": {"contact": "ask jane.doe@contoso.com please"}}, inherited=False) == "mention"
    assert m.match("tasks", {"recipients": ["JANE.DOE@contoso.com"]}, inherited=False) == "mention"
    assert m.match("models", {"description": f"owner: {JANE.objectId}."}, inherited=False) == "mention"


def test_a_guid_inside_a_longer_token_is_not_a_mention():
    m = matcher()
    for text in (
        f"x{JANE.objectId}y",
        f"{JANE.objectId}0",
        f"ab-{JANE.objectId}",
        "xjane.doe@contoso.com",
        "jane.doe@contoso.com.evil",
    ):
        assert m.match("models", {"description": text}, inherited=False) is None, text


def test_a_subject_without_upn_matches_by_object_id_only():
    m = SubjectMatcher(Subject(objectId=JANE.objectId), load_catalog())
    assert m.match("models", {"createdBy": {"upn": "jane.doe@contoso.com"}}, inherited=False) is None
    assert m.match("models", {"createdBy": {"userObjectId": JANE.objectId}}, inherited=False) == "identity"


def test_an_email_alias_names_the_subject_by_identity_and_by_mention_and_a_look_alike_does_not():
    # GIVEN Jane with an e-mail alias besides her UPN
    jane = Subject(objectId=JANE.objectId, upn=JANE.upn, emails=["Jane@Contoso.com"])
    m = SubjectMatcher(jane, load_catalog())
    # THEN systemData.createdBy with the alias, any case, is her; a notification e-mail is a mention
    assert m.match("jobs", {"systemData": {"createdBy": "JANE@contoso.com"}}, inherited=False) == "identity"
    notified = {"properties": {"notificationSetting": {"emails": ["jane@contoso.com"]}}}
    assert m.match("schedules", notified, inherited=False) == "mention"
    # AND a look-alike is nobody
    for text in ("mjane@contoso.com", "jane@contoso.com.evil", "jane@contoso.community"):
        assert m.match("jobs", {"systemData": {"createdBy": text}, "tags": {"x": text}}, inherited=False) is None, text


def test_only_the_creator_or_the_assigned_user_owns_a_v2_record():
    m = matcher()
    modified = {"systemData": {"createdBy": "john@contoso.com", "lastModifiedBy": JANE.upn}}
    assert m.by_identity("jobs", modified) and not m.by_owner("jobs", modified)
    assert m.by_owner("modelVersions", {"systemData": {"createdBy": JANE.upn.upper()}})
    assigned = {"properties": {"properties": {"personalComputeInstanceSettings": {"assignedUser": {"objectId": JANE.objectId}}}}}
    assert m.by_owner("computeInstances", {**assigned, "systemData": {"createdBy": "john@contoso.com"}})
    created_only = {"systemData": {"createdBy": JANE.upn}, "properties": {"properties": {}}}
    assert not m.by_owner("computeInstances", created_only)
