"""SNMP targets and the poller's settings, from code or from YAML.

A YAML file (see ``sample.yaml``) holds the SNMP section: optional section
settings (``interval``, ``concurrency``, ``static_refresh_polls``,
``backoff_initial``, ``backoff_max``, ``profile_dirs``), optional
``defaults`` applied to every target, and the list ``targets``. A combined
strandwatch configuration passes its ``snmp:`` mapping to :func:`parse_config`.
Every error names the file, the key and the problem.

Secrets (``community``, ``auth_key``, ``priv_key``) may instead come from an
environment variable (``community_env: SNMP_COMMUNITY``) or a file
(``auth_key_file: /run/secrets/snmp-auth``, trailing newline dropped); they
are read when the configuration is parsed. Secret values never appear in
reprs, logs or error messages: errors name the key, variable or file only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

AUTH_PROTOCOLS = ("none", "md5", "sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("none", "des", "3des", "aes", "aes128", "aes192", "aes256")
RESERVED_TAGS = ("agent_host", "ifName", "ifIndex")
"""Tags the poller sets itself; a target's own tags may not override them."""


class SnmpConfigError(ValueError):
    """A bad SNMP setting: the message names where, which key and what is wrong."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SnmpTarget:
    """One SNMP agent to poll.

    ``name`` becomes the ``agent_host`` tag. ``timeout`` (seconds) and
    ``retries`` apply to each request; ``deadline`` (seconds) bounds the whole
    poll of this target, however many requests it takes. ``version`` is
    ``"2c"`` (``community``) or ``"3"`` (``user`` with optional
    ``auth_protocol``/``auth_key`` and ``priv_protocol``/``priv_key``; keys
    are passphrases). SNMPv1 has no GETBULK and is not supported. ``interval``
    (seconds, default: every poll of the source) polls this target less
    often than the others. ``tags`` ride along on every point of this target.
    The secrets are left out of the repr.
    """

    name: str
    host: str
    port: int = 161
    version: str = "2c"
    community: str = field(default="public", repr=False)
    user: str | None = None
    auth_protocol: str = "none"
    auth_key: str | None = field(default=None, repr=False)
    priv_protocol: str = "none"
    priv_key: str | None = field(default=None, repr=False)
    timeout: float = 2.0
    retries: int = 1
    deadline: float = 10.0
    max_repetitions: int = 25
    interval: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _target_problem(self)
        if problem:
            key, message = problem
            raise SnmpConfigError(f"target {self.name!r}: {key}: {message}")


def _target_problem(target: SnmpTarget) -> tuple[str, str] | None:
    """The first bad key of a target and what is wrong with it, or None."""
    checks: list[tuple[str, bool, str]] = [
        ("name", isinstance(target.name, str) and target.name != "", "must be a non-empty string"),
        ("host", isinstance(target.host, str) and target.host != "", "must be a non-empty string"),
        (
            "port",
            _is_int(target.port) and 0 < target.port < 65536,
            f"must be an integer 1-65535, got {target.port!r}",
        ),
        (
            "version",
            target.version in ("2c", "3"),
            f"must be '2c' or '3', got {target.version!r}"
            + (" (SNMPv1 has no GETBULK)" if str(target.version) == "1" else ""),
        ),
        (
            "timeout",
            _is_number(target.timeout) and target.timeout > 0,
            f"must be seconds > 0, got {target.timeout!r}",
        ),
        (
            "retries",
            _is_int(target.retries) and target.retries >= 0,
            f"must be an integer >= 0, got {target.retries!r}",
        ),
        (
            "deadline",
            _is_number(target.deadline) and target.deadline > 0,
            f"must be seconds > 0, got {target.deadline!r}",
        ),
        (
            "interval",
            target.interval is None or (_is_number(target.interval) and 0 < target.interval < math.inf),
            f"must be seconds > 0, got {target.interval!r}",
        ),
        (
            "max_repetitions",
            _is_int(target.max_repetitions) and 0 < target.max_repetitions <= 1000,
            f"must be an integer 1-1000, got {target.max_repetitions!r}",
        ),
        (
            "tags",
            isinstance(target.tags, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in target.tags.items()),
            "must map strings to strings",
        ),
    ]
    for key, ok, message in checks:
        if not ok:
            return key, message
    clash = sorted(set(target.tags) & set(RESERVED_TAGS))
    if clash:
        return "tags", f"{clash} are set by the poller and cannot be overridden"
    if target.version == "2c":
        if not isinstance(target.community, str) or not target.community:
            return "community", "must be a non-empty string for version 2c"
        return None
    return _v3_problem(target)


def _v3_problem(target: SnmpTarget) -> tuple[str, str] | None:
    if not isinstance(target.user, str) or not target.user:
        return "user", "is required for version 3"
    if target.auth_protocol not in AUTH_PROTOCOLS:
        return "auth_protocol", f"must be one of {', '.join(AUTH_PROTOCOLS)}, got {target.auth_protocol!r}"
    if target.priv_protocol not in PRIV_PROTOCOLS:
        return "priv_protocol", f"must be one of {', '.join(PRIV_PROTOCOLS)}, got {target.priv_protocol!r}"
    if target.auth_protocol != "none" and not (isinstance(target.auth_key, str) and len(target.auth_key) >= 8):
        return "auth_key", "must be a passphrase of at least 8 characters when auth_protocol is set"
    if target.priv_protocol != "none":
        if target.auth_protocol == "none":
            return "priv_protocol", "needs an auth_protocol: USM has no privacy without authentication"
        if not (isinstance(target.priv_key, str) and len(target.priv_key) >= 8):
            return "priv_key", "must be a passphrase of at least 8 characters when priv_protocol is set"
    return None


@dataclass(frozen=True)
class SnmpConfig:
    """Everything the SNMP source needs.

    ``interval`` (seconds) is how often the daemon (``strandwatch collect
    snmp``) polls. ``concurrency`` caps how many targets are polled at once.
    ``static_refresh_polls``: ifName, ifAlias and ifHighSpeed are walked on
    the first poll and then every that many polls (1: every poll); a new
    ifIndex or a restarted agent refreshes them at once. A target that fails
    is retried ``backoff_initial`` seconds later, then after twice as long
    each further failure, at most ``backoff_max`` seconds apart; polls in
    between skip it. ``profile_dirs``: folders of vendor profiles (YAML) read
    after the built-in ones; a profile with a built-in's name replaces it.
    """

    targets: tuple[SnmpTarget, ...]
    interval: float = 10.0
    concurrency: int = 32
    static_refresh_polls: int = 10
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    profile_dirs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _is_int(self.concurrency) or self.concurrency < 1:
            raise SnmpConfigError(f"concurrency: must be an integer >= 1, got {self.concurrency!r}")
        if not _is_int(self.static_refresh_polls) or self.static_refresh_polls < 1:
            raise SnmpConfigError(
                f"static_refresh_polls: must be an integer >= 1, got {self.static_refresh_polls!r}"
            )
        for key in ("interval", "backoff_initial", "backoff_max"):
            value = getattr(self, key)
            if not _is_number(value) or not 0 < value < math.inf:
                raise SnmpConfigError(f"{key}: must be seconds > 0, got {value!r}")
        if self.backoff_max < self.backoff_initial:
            raise SnmpConfigError(
                f"backoff_max: must be at least backoff_initial ({self.backoff_initial}), got {self.backoff_max!r}"
            )
        if not isinstance(self.profile_dirs, tuple) or not all(isinstance(d, str) for d in self.profile_dirs):
            raise SnmpConfigError("profile_dirs: must be a list of folder paths")
        names = [target.name for target in self.targets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SnmpConfigError(f"targets: duplicate names {duplicates} (each name is an agent_host tag)")
        credentials: dict[str, tuple[str, SnmpTarget]] = {}
        for target in self.targets:
            if target.version != "3":
                continue
            keys = (target.auth_protocol, target.auth_key, target.priv_protocol, target.priv_key)
            first = credentials.setdefault(target.user, (repr(keys), target))
            if first[0] != repr(keys):
                raise SnmpConfigError(
                    f"targets: {first[1].name!r} and {target.name!r} use SNMPv3 user {target.user!r} with"
                    " different protocols or keys; one poller keeps one set of keys per user name"
                )


SECRETS = ("community", "auth_key", "priv_key")
"""Target keys that may instead come from ``<key>_env`` (an environment variable) or ``<key>_file``."""
_SECRET_SOURCES = {f"{key}{suffix}": key for key in SECRETS for suffix in ("_env", "_file")}
_TARGET_KEYS = tuple(f.name for f in fields(SnmpTarget)) + tuple(_SECRET_SOURCES)
_SECTION_OPTIONS = ("interval", "concurrency", "static_refresh_polls", "backoff_initial", "backoff_max")
_SECTION_KEYS = (*_SECTION_OPTIONS, "profile_dirs", "defaults", "targets")


def _secret_group(key: str) -> str | None:
    return key if key in SECRETS else _SECRET_SOURCES.get(key)


def _resolve_secrets(settings: dict[str, Any], where: str, base_dir: Path) -> None:
    """Replace ``<secret>_env`` and ``<secret>_file`` by the secret they name; errors never show a secret.

    A relative ``_file`` path is relative to ``base_dir`` (the configuration file's folder).
    """
    for secret in SECRETS:
        given = [key for key in (secret, f"{secret}_env", f"{secret}_file") if key in settings]
        if len(given) > 1:
            raise SnmpConfigError(f"{where}: set only one of {', '.join(given)}")
        if not given or given[0] == secret:
            continue
        source = given[0]
        reference = settings.pop(source)
        if not isinstance(reference, str) or not reference:
            raise SnmpConfigError(f"{where}.{source}: must be a non-empty string")
        if source.endswith("_env"):
            value = os.environ.get(reference)
            if value is None:
                raise SnmpConfigError(f"{where}.{source}: environment variable {reference} is not set")
        else:
            try:
                value = (base_dir / reference).read_text().rstrip("\r\n")
            except OSError as exc:
                raise SnmpConfigError(f"{where}.{source}: cannot read {reference}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise SnmpConfigError(f"{where}.{source}: {reference} is not UTF-8 text") from None
        if not value:
            raise SnmpConfigError(f"{where}.{source}: {reference} holds an empty {secret}")
        settings[secret] = value


def _target_from_mapping(
    entry: Mapping[str, Any], defaults: Mapping[str, Any], where: str, base_dir: Path
) -> SnmpTarget:
    if not isinstance(entry, Mapping):
        raise SnmpConfigError(f"{where}: must be a mapping of target settings, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_TARGET_KEYS))
    if unknown:
        raise SnmpConfigError(f"{where}: unknown key(s) {unknown}; known keys: {', '.join(_TARGET_KEYS)}")
    # A target that sets a secret in any form overrides every form of it in the defaults.
    overridden = {_secret_group(key) for key in entry} - {None}
    settings = {**{k: v for k, v in defaults.items() if _secret_group(k) not in overridden}, **entry}
    for key in ("name", "host"):
        if key not in settings:
            raise SnmpConfigError(f"{where}.{key}: is required")
    _resolve_secrets(settings, f"{where} ({settings['name']})", base_dir)
    if "version" in settings:
        settings["version"] = str(settings["version"])
    tags = settings.get("tags")
    if isinstance(tags, Mapping):
        # YAML turns rack: 12 into an int; a tag value is always a string.
        settings["tags"] = {str(k): v if isinstance(v, str) else str(v) for k, v in tags.items()}
    name = settings["name"]
    try:
        return SnmpTarget(**settings)
    except SnmpConfigError as exc:
        problem = str(exc).split(": ", 1)[1]
        raise SnmpConfigError(f"{where} ({name}).{problem}") from None


def parse_config(section: Mapping[str, Any], source: str = "snmp", base_dir: str | Path = ".") -> SnmpConfig:
    """Build an :class:`SnmpConfig` from a mapping; ``source`` names it in errors.

    Relative paths (``profile_dirs``, ``*_file`` secrets) are taken relative to ``base_dir``.
    """
    base = Path(base_dir)
    if not isinstance(section, Mapping):
        raise SnmpConfigError(f"{source}: must be a mapping with a 'targets' list")
    unknown = sorted(set(section) - set(_SECTION_KEYS))
    if unknown:
        raise SnmpConfigError(f"{source}: unknown key(s) {unknown}; known keys: {', '.join(_SECTION_KEYS)}")
    defaults = section.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise SnmpConfigError(f"{source}: defaults: must be a mapping of target settings")
    bad_defaults = sorted(set(defaults) - (set(_TARGET_KEYS) - {"name", "host"}))
    if bad_defaults:
        raise SnmpConfigError(f"{source}: defaults: unknown or per-target-only key(s) {bad_defaults}")
    targets = section.get("targets")
    if not isinstance(targets, list) or not targets:
        raise SnmpConfigError(f"{source}: targets: must be a non-empty list")
    parsed = tuple(
        _target_from_mapping(entry, defaults, f"{source}: targets[{index}]", base)
        for index, entry in enumerate(targets)
    )
    options = {key: section[key] for key in _SECTION_OPTIONS if key in section}
    if "profile_dirs" in section:
        dirs = section["profile_dirs"]
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise SnmpConfigError(f"{source}: profile_dirs: must be a list of folder paths")
        options["profile_dirs"] = tuple(str(base / d) for d in dirs)
    try:
        return SnmpConfig(parsed, **options)
    except SnmpConfigError as exc:
        raise SnmpConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> SnmpConfig:
    """Read an SNMP section from a YAML file (the layout of ``sample.yaml``)."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SnmpConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SnmpConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(document, str(path), path.parent)
