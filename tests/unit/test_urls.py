"""The outbound URL policy (which origins may receive the token), query handling and URL redaction. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.errors import UntrustedUrlError
from shared.domain.urls import UrlPolicy, redact_url, strip_query, with_query
from shared.settings import Settings

AZURE = UrlPolicy(Settings().endpoints)  # the production defaults
LOCAL = UrlPolicy(
    {
        "arm": "http://127.0.0.1:8080/arm",
        "modelmanagement": "http://127.0.0.1:8080/mms/{location}",
        "experiments": "http://127.0.0.1:8080/exp/{location}",
        "aether": "http://[::1]:9090/{location}",
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "https://management.azure.com/subscriptions/x?api-version=2024-04-01",
        "https://westeurope.modelmanagement.azureml.net/modelmanagement/v1.0/x",
        "https://eastus2.experiments.azureml.net/history/v1.0/x?$skipToken=abc",
        "https://uksouth.aether.ms/api/v1.0/x",
        "https://management.azure.com:443/x",  # the default port, spelled out
        "HTTPS://WestEurope.ModelManagement.AzureML.net/x",  # scheme and host are case-insensitive
        "https://westeurope.modelmanagement.azureml.net/x#frag",
    ],
)
def test_configured_families_are_allowed(url):
    assert AZURE.check(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # foreign and look-alike hosts
        ("https://evil.example/x", "a foreign host"),
        ("https://management.azure.com.evil.example/x", "the configured host as a prefix"),
        ("https://evilmanagement.azure.com/x", "the configured host as a suffix"),
        ("https://management-azure.com/x", "a dash for a dot"),
        ("https://westeurope.modelmanagement.azureml.net.evil.example/", "the family as a prefix"),
        ("https://evil.westeurope.modelmanagement.azureml.net/", "an extra label before the region"),
        ("https://a.b.modelmanagement.azureml.net/", "two labels for {location}"),
        ("https://westeuropexmodelmanagement.azureml.net/", "a regex dot must be a literal dot"),
        ("https://westeurope.modelmanagementxazureml.net/", "a regex dot must be a literal dot (2)"),
        ("https://1west.modelmanagement.azureml.net/", "a region label must start with a letter"),
        ("https://w.modelmanagement.azureml.net/", "a region label has 2 to 40 characters"),
        ("https://" + "w" * 41 + ".modelmanagement.azureml.net/", "a region label has 2 to 40 characters (2)"),
        ("https://west-europe.modelmanagement.azureml.net/", "no dash in a region"),
        ("https://xn--wsteurope-f4a.modelmanagement.azureml.net/", "a punycode label"),
        ("https://westeurope.aether.ms.modelmanagement.azureml.net/", "one family inside another"),
        ("https://westeurope.modelmanagement.azureml.net./", "a trailing dot is another spelling, refused"),
        # {location} cannot be abused to end the host early
        ("https://evil.example#.modelmanagement.azureml.net", "a fragment ends the host"),
        ("https://evil.example/.modelmanagement.azureml.net", "a path ends the host"),
        ("https://evil.example?.modelmanagement.azureml.net", "a query ends the host"),
        ("https://evil.example\\.modelmanagement.azureml.net", "a backslash (read as a slash by some parsers)"),
        # user info
        ("https://westeurope.modelmanagement.azureml.net@evil.example/", "the allowed host as user info"),
        ("https://user:pass@management.azure.com/", "credentials in the URL"),
        ("https://@management.azure.com/", "an empty user info"),
        ("https://management.azure.com:443@evil.example/", "the port as user info"),
        ("https://evil.example\\@management.azure.com/", "a backslash before the @"),
        ("https://management.azure.com%2f@evil.example/", "an encoded slash before the @"),
        # scheme and port
        ("http://management.azure.com/x", "plain http to a non-loopback host"),
        ("ftp://management.azure.com/x", "another scheme"),
        ("//management.azure.com/x", "scheme-relative"),
        ("/subscriptions/x", "relative"),
        ("https://management.azure.com:8443/x", "another port"),
        ("https://management.azure.com:0/x", "port 0"),
        ("https://management.azure.com:99999/x", "an invalid port"),
        ("https://management.azure.com:443:80/x", "two ports"),
        ("https://[::1/x", "an unparsable host"),
        # characters the policy and the HTTP client could read differently
        ("https://manage\tment.azure.com/x", "a tab (urlsplit drops it)"),
        ("https://management.azure.com\n.evil.example/x", "a newline"),
        (" https://management.azure.com/x", "leading whitespace"),
        ("https://management.azure.com/x y", "a space"),
        ("https://u\u212asouth.modelmanagement.azureml.net/", "the Kelvin sign lowercases to k"),
        ("https://westeurope.modelmanagement.azureml.ne\u0074\u0338/", "a combining character"),
        ("https://ｍanagement.azure.com/x", "a fullwidth letter"),
        ("https://management.azure.com\x00.evil.example/", "a NUL"),
    ],
)
def test_anything_else_is_refused(url, why):
    with pytest.raises(UntrustedUrlError):
        AZURE.check(url)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/arm/x", True),
        ("http://127.0.0.1:8080/mms/westeurope/x", True),
        ("http://[::1]:9090/westeurope/x", True),
        ("http://127.0.0.1:8081/arm/x", False),  # another port on loopback: another server (an attacker's)
        ("http://127.0.0.1/arm/x", False),
        ("http://localhost:8080/arm/x", False),  # another spelling of the host is not on the list
        ("http://127.0.0.2:8080/arm/x", False),
        ("https://127.0.0.1:8080/arm/x", False),  # the scheme is part of the origin
        ("http://[::1]:8080/x", False),
        ("http://user@127.0.0.1:8080/x", False),
    ],
)
def test_loopback_endpoints_allow_exactly_their_origin(url, allowed):
    if allowed:
        LOCAL.check(url)
    else:
        with pytest.raises(UntrustedUrlError):
            LOCAL.check(url)


def test_http_is_refused_for_a_non_loopback_host_even_if_configured():
    policy = UrlPolicy({"arm": "http://management.azure.com"})  # settings refuse this; the policy does too
    with pytest.raises(UntrustedUrlError, match="https"):
        policy.check("http://management.azure.com/x")


def test_the_refusal_names_the_host_but_not_the_url():
    with pytest.raises(UntrustedUrlError) as info:
        AZURE.check("https://evil.example/steal?sig=SECRET")
    assert "evil.example" in info.value.message and "SECRET" not in info.value.message
    assert info.value.code == "untrusted_url"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_a_location_value_either_stays_one_label_of_the_family_or_is_refused(location):
    # GIVEN any text put where {location} goes in the template (the contract's regex is the first guard)
    url = f"https://{location}.modelmanagement.azureml.net/modelmanagement/v1.0/x"
    try:
        AZURE.check(url)
    except UntrustedUrlError:
        return
    # THEN if the policy let it through, the host is <one region label>.modelmanagement.azureml.net
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    label, _, rest = host.partition(".")
    assert rest == "modelmanagement.azureml.net"
    assert label.isascii() and label.isalnum() and label[0].isalpha() and label.islower()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_the_policy_never_raises_anything_but_untrusted_url(url):
    try:
        AZURE.check(url)
    except UntrustedUrlError:
        pass


# -- with_query / strip_query ---------------------------------------------------------------------------------------


def test_with_query_adds_missing_parameters_and_keeps_existing_ones():
    assert with_query("https://h/p?a=1", {"a": "2", "b": "3"}) == "https://h/p?a=1&b=3"


def test_with_query_override_replaces_case_insensitively():
    # a nextLink that turns includeSecret back on gets ours re-imposed, whatever its spelling
    url = with_query("https://h/p?IncludeSecret=true&$skipToken=abc", {"includeSecret": "false"}, override=True)
    assert url == "https://h/p?%24skipToken=abc&includeSecret=false" or url == "https://h/p?$skipToken=abc&includeSecret=false"
    assert "true" not in url


def test_with_query_keeps_the_host_and_path():
    assert with_query("https://h:8443/a/b", {"api-version": "1"}).startswith("https://h:8443/a/b?")


def test_with_query_encodes_values():
    url = with_query("https://h/p", {"q": "a&b=c#d"})
    assert url == "https://h/p?q=a%26b%3Dc%23d"


def test_strip_query_drops_query_and_fragment():
    assert strip_query("https://h/p?sig=x#f") == "https://h/p"


# -- redact_url -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h/p?api-version=2024-04-01&sig=SECRET&$skiptoken=TOKEN", "https://h/p?api-version=2024-04-01&sig&$skiptoken"),
        (
            "https://h/p?includeSecret=false&forceToPurge=true&code=SECRET",
            "https://h/p?includeSecret=false&forceToPurge=true&code",
        ),
        ("https://user:SECRET@h:8443/p?x=SECRET#SECRET", "https://h:8443/p?x"),
        ("https://h/p?api-version=1&api-version=2", "https://h/p?api-version=1&api-version=2"),
        ("https://h/p", "https://h/p"),
        ("http://[::1]:8080/p?sv=1&se=2&sig=SECRET", "http://[::1]:8080/p?sv&se&sig"),
        ("https://[::1/p?sig=SECRET", "(unparsable URL)"),
    ],
)
def test_redact_url_keeps_names_and_drops_values(url, expected):
    assert redact_url(url) == expected
    assert "SECRET" not in redact_url(url) and "TOKEN" not in redact_url(url)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_redact_url_never_raises(url):
    assert isinstance(redact_url(url), str)
