"""Secret detectors: API keys, tokens, private keys and credentials in headers and URLs are
found; identifiers, hashes, UUIDs, placeholders and encoded prose are not."""

from __future__ import annotations

import base64
import json
import random
import secrets
import string
import time

import pytest

from elevenfactor.governance._guard_secrets import SECRET_KINDS, find_secrets
from elevenfactor.governance._guard_secrets_entropy import MIN_ENTROPY, shannon_entropy

# Fake credentials are assembled at run time so the test file itself holds no key-shaped
# literals for hosted secret scanners to trip on.
_RNG = random.Random(20240601)
_ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = _ALNUM) -> str:
    """A reproducible random string; it mixes letters and digits when the alphabet does."""
    mixed = any(c.isdigit() for c in alphabet) and any(c.isalpha() for c in alphabet)
    while True:
        value = "".join(_RNG.choice(alphabet) for _ in range(n))
        if not mixed or (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
            return value


def b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


JWT = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url({'sub': '42'})}.{rand(43)}"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(rand(64, _ALNUM + "+/") for _ in range(3))
    + "\n-----END RSA PRIVATE KEY-----"
)
AWS_ID = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
AWS_SECRET = rand(40, _ALNUM + "/+")


def found(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in find_secrets(text)]


@pytest.mark.parametrize(
    ("template", "kind", "value"),
    [
        ("OPENAI_API_KEY={v}", "openai_api_key", "sk-" + rand(48)),
        ("key: {v}", "openai_api_key", "sk-proj-" + rand(40, _ALNUM + "_-")),
        ("key: {v}", "openai_api_key", "sk-svcacct-" + rand(40)),
        ("ANTHROPIC_API_KEY={v}", "anthropic_api_key", "sk-ant-api03-" + rand(80, _ALNUM + "-_")),
        ("id {v} in config", "aws_access_key_id", AWS_ID),
        ("temp creds {v}", "aws_access_key_id", "ASIA" + rand(16, string.ascii_uppercase + "0123")),
        ("export GH_TOKEN={v}", "github_token", "ghp_" + rand(36)),
        ("token {v}", "github_token", "gho_" + rand(36)),
        ("pat {v}", "github_token", "github_pat_" + rand(22) + "_" + rand(59)),
        ("gitlab {v}", "gitlab_token", "glpat-" + rand(20, _ALNUM + "_-")),
        ("slack {v}", "slack_token", "xoxb-" + rand(12, "0123456789") + "-" + rand(24)),
        ("slack {v}", "slack_token", "xoxp-" + rand(12, "0123456789") + "-" + rand(32)),
        (
            "hook {v} posted",
            "slack_webhook",
            "https://hooks.slack.com/services/"
            f"T{rand(8, '0123456789ABC')}/B{rand(8, '0123456789XYZ')}/{rand(24)}",
        ),
        ("stripe {v}", "stripe_key", "sk_live_" + rand(24)),
        ("stripe {v}", "stripe_key", "rk_live_" + rand(24)),
        ("maps {v}&q=1", "google_api_key", "AIza" + rand(35, _ALNUM + "_-")),
        ("X-API-Key: {v}", "elevenfactor_api_key", "ef_1a2b3c4d_" + rand(43, _ALNUM + "_-")),
        ("cookie session={v};", "jwt", JWT),
        ("see {v}\nthanks", "private_key", PEM),
        ("Authorization: Bearer {v}", "auth_header", rand(32)),
        ('headers={{"authorization": "Basic {v}"}}', "auth_header", "dXNlcjpodW50ZXIy"),
        ("X-Auth-Token: {v}", "auth_header", rand(24)),
        ("send Bearer {v} upstream", "bearer_token", rand(30)),
        ("DATABASE_URL=postgres://app:{v}@db.internal:5432/app", "url_password", "s3cr3t-P4ss"),
        ("api_key = '{v}'", "generic_secret", rand(32)),
        ('"client_secret": "{v}"', "generic_secret", rand(40, _ALNUM + "-_")),
        ("PASSWORD={v}", "generic_secret", rand(24, _ALNUM + "+/")),
        ("SECRET_KEY = '{v}'", "generic_secret", secrets.token_hex(32)),
        ("token: {v}", "generic_secret", secrets.token_hex(20)),
    ],
)
def test_positive(template: str, kind: str, value: str) -> None:
    assert found(template.format(v=value)) == [(kind, value)]


def test_aws_secret_near_its_key_id() -> None:
    text = f"aws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n"
    assert found(text) == [("aws_access_key_id", AWS_ID), ("aws_secret_access_key", AWS_SECRET)]
    # The AWS documentation's example pair.
    docs = "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert [k for k, _ in found(docs)] == ["aws_access_key_id", "aws_secret_access_key"]
    # 40 base64 characters with no AWS context are not an AWS secret.
    assert found(f"blob {AWS_SECRET} end") == []


@pytest.mark.parametrize(
    "text",
    [
        "pip install scikit-learn; sk-learn-tutorial-for-beginners is popular",
        "sk-this-is-not-an-openai-thing-at-all and task-" + rand(30),
        "public key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + rand(32) + " jane@laptop",
        "AKIA is a prefix; AKIAIOSFODNN7EXAMPL is too short",
        "ghp_short and github_pat_tooshort",
        "xoxb-not-a-token-really and sk_live_ alone",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
        "-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        f"eyJub3RqdXN0.{b64url({'sub': 1})}.sig and {b64url({'typ': 'JWT'})}.{b64url({'a': 1})}.x",
        "curl -H 'Authorization: Bearer YOUR_API_KEY' -H 'Authorization: Bearer <token>'",
        'curl -H "Authorization: Bearer $OPENAI_API_KEY" -H "X-API-Key: ${API_KEY}"',
        "Authorization: Bearer xxxxxxxxxxxxxxxxxxxx and Authorization: Basic ************",
        "Bearer tokens are short-lived; send the bearer authentication header",
        "Authorization: token",
        "postgres://user:password@localhost/db and https://user@example.com/path",
        "redis://:<password>@cache:6379/0 and amqp://guest:${PASS}@mq/",
        "request id 123e4567-e89b-12d3-a456-426614174000 for token refresh",
        "token=123e4567-e89b-12d3-a456-426614174000",
        "fix token refresh (a94a8fe5ccb19ba61c4c0873d391e987982fbbd3)",
        "Merge 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 into key-rotation",
        "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "token: SGVsbG8gd29ybGQgdGhpcyBpcyBhIHRlc3Q=",
        "secret: VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==",
        "max_tokens_per_request_2048 and token budget claude-3-5-sonnet-20241022",
        "token model gpt-4o-mini-2024-07-18, key path /usr/local/lib/python3.11/site-packages",
        "password: ThisIsMySuperLongPassword1 (a passphrase, not a machine secret)",
        "the password reset link expires; api_key_rotation_interval_days=30",
        "secret sauce: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA and key 00000000000000000000000000",
        "The keyboard and the monkey: " + rand(30),
        rand(40) + " appears with no keyword anywhere near",
    ],
)
def test_negative(text: str) -> None:
    assert found(text) == []


def test_specific_rules_win_over_context_rules() -> None:
    key = "sk-proj-" + rand(40)
    assert found(f"Authorization: Bearer {key}") == [("openai_api_key", key)]
    assert found(f"api_key={key}") == [("openai_api_key", key)]
    assert found(f"Authorization: Bearer {JWT}") == [("jwt", JWT)]
    token = rand(32)
    assert found(f"Authorization: Bearer {token}") == [("auth_header", token)]


def test_findings_carry_rule_and_no_value() -> None:
    key = "ghp_" + rand(36)
    [f] = find_secrets(f"token {key}")
    assert (f.rule, f.kind, f.detail) == ("secret.github_token", "github_token", "GitHub token")
    assert key not in json.dumps(f.to_dict())
    [g] = find_secrets(f"api_key = '{rand(32)}'")
    assert g.rule == "secret.generic_secret" and g.score < 1.0 and "bits/char" in g.detail
    assert set(SECRET_KINDS) >= {"jwt", "private_key", "generic_secret", "elevenfactor_api_key"}


def test_private_key_blocks() -> None:
    two = f"{PEM}\nand\n{PEM.replace('RSA', 'EC')}"
    assert [v for _, v in found(two)] == [PEM, PEM.replace("RSA", "EC")]
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\nAAAABG5vbmU="
    assert found(truncated + "\n") == [("private_key", truncated + "\n")]
    pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----"
    assert found(pgp) == [("private_key", pgp)]
    enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHz\n-----END ENCRYPTED PRIVATE KEY-----"
    assert found(enc) == [("private_key", enc)]


def test_our_own_keys_are_always_found() -> None:
    for _ in range(300):  # token_urlsafe may start or end with - or _
        key = f"ef_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
        assert found(f"ELEVENFACTOR_API_KEY={key}\n") == [("elevenfactor_api_key", key)]


def test_keys_glued_to_unicode_text() -> None:
    key = "sk-proj-" + rand(40)
    assert found(f"キーは{key}です") == [("openai_api_key", key)]
    assert found(f"clé «{key}»") == [("openai_api_key", key)]


def test_random_tokens_clear_the_entropy_bar() -> None:
    assert shannon_entropy("") == 0.0 and shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    hits = sum(bool(found(f"api_key = '{rand(32)}'")) for _ in range(200))
    assert hits >= 190  # random base62 secrets of 32 characters: recall of the generic rule
    assert shannon_entropy("session_token_expiry_v2_seconds") > MIN_ENTROPY  # so: word check


# --- cost: no catastrophic backtracking ---------------------------------------------------

_SIZE = 100_000


def _rep(unit: str) -> str:
    return (unit * (_SIZE // len(unit) + 1))[:_SIZE]


def _scan_seconds(text: str) -> float:
    start = time.perf_counter()
    find_secrets(text)
    return time.perf_counter() - start


def test_100kb_of_mixed_text_is_scanned_fast() -> None:
    text = _rep(
        f"config: api_key = '{rand(32)}' token {'ghp_' + rand(36)} and the usual prose about "
        f"tokens, keys and secrets; Authorization: Bearer {rand(30)} {JWT} "
        f"sha {secrets.token_hex(20)}\n"
    )
    assert len(find_secrets(text)) > 1000
    assert _scan_seconds(text) < 1.0  # a guard against backtracking, not a benchmark


@pytest.mark.parametrize(
    "unit",
    [
        "a",
        "sk-",
        "sk-a",
        "eyJ",
        "eyJa.",
        "eyJaaaaa.bbbbb",
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "-----END PRIVATE KEY-----",
        "Bearer ",
        "Authorization: ",
        "authorization=",
        "x://a:",
        "postgres://a",
        "key=",
        "token ",
        "token Ab3dEf6hIj9kLm2nOp5q ",
        "Ab3/",
        "AKIA",
        "ghp_",
        "xoxb-1",
        "ef_",
        "https://hooks.slack.com/services/T",
    ],
)
def test_adversarial_inputs_do_not_backtrack(unit: str) -> None:
    assert _scan_seconds(_rep(unit)) < 1.0
    assert _scan_seconds("secret = " + _rep(unit)) < 1.0
