"""Signed callbacks without a broker: signatures, replays, URLs, allow-lists, addresses."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fleetline import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    JobSpec,
    SpecError,
    sign_webhook,
    verify_webhook,
)
from fleetline.producer.submit import parse_spec
from fleetline.shared.api_settings import ApiSettings
from fleetline.shared.callback_hosts import (
    Allowance,
    IPAddress,
    address_problem,
    allowance,
    host_refusal,
    parse_callback_url,
    parse_pattern,
)
from fleetline.shared.errors import ConfigError
from fleetline.shared.settings import load_settings
from fleetline.shared.webhooks import signed_headers
from fleetline.workers.callbacks import (
    CallbackRefused,
    Resolver,
    backoff_s,
    checked_address,
    failed,
    resolve,
    signed_request,
)

SECRET = "whsec-0123456789abcdef"
BODY = b'{"job_id":"j1","status":"succeeded"}'
NOW = 1_767_225_600.0


def test_a_signature_verifies_with_the_secret_timestamp_and_body_it_was_made_of() -> None:
    headers = signed_headers(SECRET, BODY, now=NOW)
    timestamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert timestamp == "1767225600" and signature.startswith("v1=")
    assert signature == sign_webhook(SECRET, timestamp, BODY)
    assert verify_webhook(SECRET, timestamp, BODY, signature, now=NOW + 10)
    assert not verify_webhook("another-secret-0000", timestamp, BODY, signature, now=NOW)
    assert not verify_webhook(SECRET, timestamp, BODY + b" ", signature, now=NOW)
    # The timestamp is signed: a captured signature cannot be moved to a fresh timestamp.
    assert not verify_webhook(SECRET, str(int(NOW) + 60), BODY, signature, now=NOW + 60)
    assert not verify_webhook(SECRET, "not-a-number", BODY, signature, now=NOW)
    assert not verify_webhook(SECRET, timestamp, BODY, "v1=00", now=NOW)


def test_a_replay_outside_the_tolerance_is_refused() -> None:
    timestamp = str(int(NOW))
    signature = sign_webhook(SECRET, timestamp, BODY)
    assert verify_webhook(SECRET, timestamp, BODY, signature, now=NOW + 300)
    assert not verify_webhook(SECRET, timestamp, BODY, signature, now=NOW + 301)
    assert not verify_webhook(SECRET, timestamp, BODY, signature, now=NOW - 301)
    assert verify_webhook(SECRET, timestamp, BODY, signature, tolerance_s=3600, now=NOW + 3000)


def test_one_matching_signature_of_several_passes() -> None:
    timestamp = str(int(NOW))
    good = sign_webhook(SECRET, timestamp, BODY)
    assert verify_webhook(SECRET, timestamp, BODY, f"v1=deadbeef, {good}", now=NOW)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.acme.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://user:pw@hooks.acme.com/", "credentials"),
        ("https://hooks.acme.com/#frag", "fragment"),
        ("https://hooks.acme.com:99999/", "port"),
        ("https://hooks acme.com/", "spaces"),
        ("https://hööks.acme.com/", "ASCII"),
        ("https://bad_host-.com/", "invalid host"),
        ("https://hooks.acme.com/" + "a" * 2100, "longer than"),
    ],
)
def test_a_callback_url_must_be_plain_http_or_https(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_callback_url(url)


def test_a_callback_url_is_taken_apart_with_its_port_filled_in() -> None:
    target = parse_callback_url("https://Hooks.ACME.com./done?job=1")
    assert (target.host, target.port, target.target) == ("hooks.acme.com", 443, "/done?job=1")
    assert target.host_header == "hooks.acme.com"
    v6 = parse_callback_url("http://[::1]:8080")
    assert (v6.host, v6.port, v6.target, v6.host_header) == ("::1", 8080, "/", "[::1]:8080")
    assert v6.url_for(ipaddress.ip_address("::1")) == "http://[::1]:8080/"


@pytest.mark.parametrize(
    ("entries", "url", "expected"),
    [
        (["hooks.acme.com"], "https://hooks.acme.com/x", Allowance.NAMED),
        (["hooks.acme.com"], "https://hooks.acme.com:8443/x", Allowance.NAMED),
        (["hooks.acme.com:8443"], "https://hooks.acme.com/x", Allowance.REFUSED),
        (["hooks.acme.com:8443"], "https://hooks.acme.com:8443/x", Allowance.NAMED),
        (["*.acme.com"], "https://a.b.acme.com/x", Allowance.PUBLIC),
        (["*.acme.com"], "https://acme.com/x", Allowance.REFUSED),
        (["*.acme.com"], "https://evilacme.com/x", Allowance.REFUSED),
        (["*.acme.com:443"], "http://a.acme.com/x", Allowance.REFUSED),
        (["*"], "http://anything.example/x", Allowance.PUBLIC),
        (["*", "127.0.0.1:9000"], "http://127.0.0.1:9000/x", Allowance.NAMED),
        (["[::1]:9000"], "http://[::1]:9000/x", Allowance.NAMED),
        ([], "https://hooks.acme.com/x", Allowance.REFUSED),
    ],
)
def test_the_allow_list_names_hosts_or_matches_them_by_pattern(
    entries: list[str], url: str, expected: Allowance
) -> None:
    assert allowance(entries, parse_callback_url(url)) is expected


@pytest.mark.parametrize("entry", ["http://x.com", "x.com:http", "[::1", "*.", "a b", "x.com:0"])
def test_a_malformed_allow_list_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="callback host"):
        parse_pattern(entry)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
        # IPv6 forms that carry an IPv4 address are judged by it.
        ("::ffff:127.0.0.1", "loopback address 127.0.0.1"),
        ("::ffff:169.254.169.254", "link-local address 169.254.169.254"),
        ("2002:a00:1::", "private address 10.0.0.1"),
        ("64:ff9b::7f00:1", "loopback address 127.0.0.1"),
    ],
)
def test_addresses_a_pattern_may_not_reach(address: str, problem: str) -> None:
    found = address_problem(ipaddress.ip_address(address))
    assert found is not None and found.startswith(problem)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def resolver(answers: list[str]) -> Resolver:
    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers]

    return resolve


def test_resolved_addresses_are_checked_unless_the_host_is_named_exactly() -> None:
    target = parse_callback_url("https://hooks.acme.com/x")
    public = resolver(["93.184.216.34"])
    assert str(checked_address(target, ["*.acme.com"], public)) == "93.184.216.34"
    # One bad address among the answers refuses the host: the connection might use it.
    mixed = resolver(["93.184.216.34", "::ffff:10.0.0.7"])
    with pytest.raises(CallbackRefused, match=r"private address 10\.0\.0\.7"):
        checked_address(target, ["*.acme.com"], mixed)
    metadata = resolver(["169.254.169.254"])
    with pytest.raises(CallbackRefused, match="link-local"):
        checked_address(target, ["*"], metadata)
    named = checked_address(target, ["hooks.acme.com"], metadata)
    assert str(named) == "169.254.169.254"


def test_a_host_spelled_as_a_number_is_judged_by_the_address_it_resolves_to() -> None:
    # 2130706433 is no IP address to the URL parser, but the resolver reads it as 127.0.0.1.
    target = parse_callback_url("http://2130706433:8080/x")
    assert target.literal is None
    with pytest.raises(CallbackRefused, match="loopback"):
        checked_address(target, ["*"], resolve)


def test_the_request_goes_to_the_checked_address_as_if_to_the_host() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        target = parse_callback_url("https://hooks.acme.com:8443/done")
        address = ipaddress.ip_address("93.184.216.34")
        http.send(signed_request(http, target, address, BODY, SECRET, {"Fleetline-Attempt": "1"}))
    (request,) = seen
    assert str(request.url) == "https://93.184.216.34:8443/done"
    assert request.headers["host"] == "hooks.acme.com:8443"
    # TLS is spoken to the host's name: its certificate is checked against it.
    assert request.extensions["sni_hostname"] == "hooks.acme.com"
    assert request.content == BODY and request.headers["content-type"] == "application/json"
    assert verify_webhook(
        SECRET,
        request.headers[TIMESTAMP_HEADER],
        request.content,
        request.headers[SIGNATURE_HEADER],
    )


def test_failed_attempts_back_off_then_give_up() -> None:
    api = ApiSettings(callback_attempts=4, callback_backoff_s=1, callback_backoff_max_s=3)
    assert [backoff_s(n, api, rng=1.0) for n in (1, 2, 3, 4)] == [1, 2, 3, 3]
    assert backoff_s(1, api, rng=0.0) == 0.75
    # Jitter never makes a wait shorter than the one before it (below the ceiling).
    assert backoff_s(2, api, rng=0.0) > backoff_s(1, api, rng=1.0)
    assert backoff_s(1, api, retry_after_s=2.5, rng=1.0) == 2.5
    assert backoff_s(1, api, retry_after_s=60, rng=1.0) == 3
    assert failed(3, api, {}).outcome == "retry"
    assert failed(4, api, {"error": "HTTP 500"}).outcome == "abandoned"


def test_a_callback_url_is_checked_at_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FLEETLINE_API_CALLBACK_HOSTS",
        json.dumps({"acme": ["hooks.acme.com", "*"], "*": ["hooks.shared.io"]}),
    )
    monkeypatch.setenv("FLEETLINE_API_WEBHOOK_SECRETS", json.dumps({"acme": SECRET}))
    settings = load_settings()

    def refusal(tenant: str, url: str) -> list[tuple[str, str]]:
        spec = {**_brief(), "tenant": tenant, "callback_url": url}
        with pytest.raises(SpecError) as refused:
            parse_spec(spec, settings)
        return refused.value.errors

    parsed, _ = parse_spec({**_brief(), "callback_url": "https://hooks.acme.com/x"}, settings)
    assert parsed.callback_url == "https://hooks.acme.com/x"
    assert parse_spec({**_brief(), "callback_url": "http://localhost:9/x"}, settings)
    [(field, reason)] = refusal("acme", "ftp://hooks.acme.com/x")
    assert field == "callback_url" and "http://" in reason
    # A pattern does not reach a private address named in the URL.
    [(field, reason)] = refusal("acme", "http://127.0.0.1:9000/x")
    assert field == "callback_url" and "loopback" in reason and "exactly" in reason
    [(field, reason)] = refusal("acme", "http://169.254.169.254/latest/meta-data")
    assert "link-local" in reason
    # The "*" list applies to other tenants, who also need a secret of their own.
    [(field, reason)] = refusal("globex", "https://hooks.shared.io/x")
    assert field == "callback_url" and "no webhook secret" in reason


def test_without_an_allow_list_callbacks_are_refused() -> None:
    api = ApiSettings(webhook_secrets={"acme": SecretStr(SECRET)})
    assert api.callback_refusal("acme", "https://hooks.acme.com/") is not None
    refused = host_refusal([], parse_callback_url("https://hooks.acme.com/"))
    assert refused is not None and "allow-list" in refused
    assert JobSpec(kind="k", input={}).callback_url is None


def test_settings_refuse_bad_patterns_and_short_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_API_CALLBACK_HOSTS", '{"acme": ["https://x.com"]}')
    with pytest.raises(ConfigError, match="callback host"):
        load_settings()
    monkeypatch.setenv("FLEETLINE_API_CALLBACK_HOSTS", '{"acme": ["x.com"]}')
    monkeypatch.setenv("FLEETLINE_API_WEBHOOK_SECRETS", '{"acme": "short"}')
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_settings()


def test_webhook_secrets_are_read_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"acme": SECRET}) + "\n")
    monkeypatch.setenv("FLEETLINE_API_WEBHOOK_SECRETS_FILE", str(path))
    assert load_settings().api.webhook_secret("acme") == SECRET


def _brief() -> dict[str, object]:
    return {
        "kind": "research_brief",
        "tenant": "acme",
        "input": {"question": "How?", "documents": [{"id": "d1", "text": "Acme grew."}]},
    }
