"""Structured logging: text and JSON lines, and no secret ever reaching a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from collector.service import configure_logging, redact, register_secrets, secret_values
from collector.sources.snmp import parse_config as parse_snmp_config


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


@pytest.mark.parametrize("text, expected", [
    ("connect failed: community=s3cret-comm host=leaf01", "connect failed: community=*** host=leaf01"),
    ("password: hunter22, retrying", "password: ***, retrying"),
    ('{"token": "abc.def-ghi", "org": "x"}', '{"token": "***", "org": "x"}'),
    ("mqtt.tls.key_password='p w'", "mqtt.tls.key_password='***'"),
    ("url http://ingest:Sup3rS3cret@influx:8086/write", "url http://ingest:***@influx:8086/write"),
    ("header Authorization: Token AbCdEf123==", "header Authorization: Token ***"),
    ("auth_key=abcdefgh priv-key=ijklmnop", "auth_key=*** priv-key=***"),
    ("influx token=tok&db=x", "influx token=***&db=x"),
    ("nothing to hide: leaf01 swp1 up, 3 points", "nothing to hide: leaf01 swp1 up, 3 points"),
])
def test_secret_shapes_are_redacted(text, expected):
    assert redact(text) == expected


def test_configured_secret_values_are_redacted_wherever_they_appear(captured):
    configure_logging("INFO", secrets=["Pl41n-V4lue", "ab"], stream=captured)
    log = logging.getLogger("strandwatch.test")
    log.info("the broker said: bad user Pl41n-V4lue")
    log.warning("formatted %s and %r", "Pl41n-V4lue", {"x": "Pl41n-V4lue"})
    register_secrets(["later-added-secret"])
    log.error("reload saw later-added-secret; ab stays (too short to redact by value)")
    try:
        raise ConnectionError("auth failed for community Pl41n-V4lue")
    except ConnectionError:
        log.exception("poll failed")
    output = captured.getvalue()
    assert "Pl41n-V4lue" not in output and "later-added-secret" not in output
    assert output.count("***") == 6  # the traceback shows the raising line and the message
    assert "ab stays" in output
    assert "ConnectionError: auth failed for community ***" in output  # traceback redacted too


def test_json_lines(captured):
    configure_logging("DEBUG", json_lines=True, secrets=["t0ken-value"], stream=captured)
    logging.getLogger("collector.ingest").debug("wrote %d points with token t0ken-value", 5)
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("x").exception("boom password=pw123")
    first, second = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert first["level"] == "DEBUG" and first["logger"] == "collector.ingest"
    assert first["message"] == "wrote 5 points with token ***"
    assert first["time"].endswith("+00:00")
    assert second["message"] == "boom password=***"
    assert "ZeroDivisionError" in second["exception"]


def test_bad_level_is_named(captured):
    with pytest.raises(ValueError, match="'LOUD'"):
        configure_logging("LOUD", stream=captured)


def test_secret_values_finds_the_secrets_of_a_parsed_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("V3_PRIV", "priv-passphrase-1")
    config = parse_snmp_config({
        "targets": [
            {"name": "leaf01", "host": "127.0.0.1", "community": "c0mmunity-1"},
            {"name": "leaf02", "host": "127.0.0.1", "version": "3", "user": "poller", "auth_protocol": "sha256",
             "auth_key": "auth-passphrase-1", "priv_protocol": "aes", "priv_key_env": "V3_PRIV"},
        ],
    })
    found = secret_values(config)
    assert {"c0mmunity-1", "auth-passphrase-1", "priv-passphrase-1"} <= found
    assert "sha256" not in found and "poller" not in found and "leaf01" not in found
    assert secret_values({"mqtt": {"password": "pw", "username": "agent"}, "tokens": ["x"], "site": "pw2"}) == {"pw", "x"}
