"""Secret values in memory: wrappers that never show what they hold."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final, NoReturn

import attrs

from ._errors import InvalidSecretError

__all__ = [
    "ENV_NAME_PATTERN",
    "MAX_ENV_ENTRY_BYTES",
    "MAX_SECRET_BYTES",
    "RESERVED_ENV_NAMES",
    "RESERVED_ENV_PREFIXES",
    "SecretMaterial",
    "SecretValue",
    "check_env_deliverable",
    "validate_secret_env_name",
]

ENV_NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_NAME_LENGTH: Final = 255
MAX_SECRET_BYTES: Final = 500 * 1024
# Linux limits one "NAME=value" environment string, with its terminating NUL,
# to 32 pages (MAX_ARG_STRLEN: 131,072 bytes with 4 KiB pages). execve fails
# with E2BIG beyond that, so the entrypoint cannot export a longer secret.
MAX_ENV_ENTRY_BYTES: Final = 32 * 4096

# Names that change how a shell, the dynamic loader, Node.js or pi itself finds
# and runs code, and names bash gives a meaning of its own (assigning to an
# integer variable such as RANDOM evaluates the value). A secret delivered under
# one of them would let anyone who can store secrets take over the sandbox's
# processes, so they are rejected everywhere. The image's entrypoint keeps the
# same list, and uses the _PI_ prefix for its own variables.
RESERVED_ENV_NAMES: Final = frozenset(
    {
        "BASHOPTS",
        "BASHPID",
        "BASH_ENV",
        "CDPATH",
        "DIRSTACK",
        "ENV",
        "EPOCHREALTIME",
        "EPOCHSECONDS",
        "EUID",
        "FUNCNAME",
        "GCONV_PATH",
        "GLOBIGNORE",
        "GROUPS",
        "HISTCMD",
        "HOME",
        "HOSTALIASES",
        "IFS",
        "LINENO",
        "LOCALDOMAIN",
        "NODE_EXTRA_CA_CERTS",
        "NODE_OPTIONS",
        "NODE_PATH",
        "NODE_REPL_EXTERNAL_MODULE",
        "OLDPWD",
        "OPTIND",
        "PATH",
        "PERL5LIB",
        "PERL5OPT",
        "PIPESTATUS",
        "PI_CODING_AGENT_DIR",
        "PI_SECRETS_DIR",
        "PI_SESSION_ID",
        "PPID",
        "PROMPT_COMMAND",
        "PS4",
        "PWD",
        "PYTHONHOME",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "RANDOM",
        "RES_OPTIONS",
        "SECONDS",
        "SHELL",
        "SHELLOPTS",
        "SHLVL",
        "SRANDOM",
        "TMPDIR",
        "UID",
        "USER",
    }
)
RESERVED_ENV_PREFIXES: Final = ("LD_", "DYLD_", "BASH_", "NPM_CONFIG_", "_PI_")


def validate_secret_env_name(name: str) -> None:
    """Raise `InvalidSecretError` unless ``name`` may carry a secret into a sandbox.

    The name must be a shell identifier of at most 255 characters and must not be
    one of `RESERVED_ENV_NAMES` or start with one of `RESERVED_ENV_PREFIXES`.
    Names are compared case-insensitively against the reserved list, because
    some programs read those variables regardless of case.
    """
    if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
        msg = (
            f"invalid environment variable name {name!r}: use letters, digits and "
            "underscores, not starting with a digit"
        )
        raise InvalidSecretError(msg)
    if len(name) > MAX_ENV_NAME_LENGTH:
        msg = f"environment variable name is {len(name)} characters long; the maximum is 255"
        raise InvalidSecretError(msg)
    upper = name.upper()
    if upper in RESERVED_ENV_NAMES or upper.startswith(RESERVED_ENV_PREFIXES):
        msg = (
            f"environment variable {name!r} is reserved because it changes how programs "
            "in the sandbox load or run; choose another name"
        )
        raise InvalidSecretError(msg)


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@attrs.frozen(repr=False, eq=False)
class SecretValue:
    """One secret value; `repr` and `str` show only that it is set.

    Call `reveal()` at the single place that needs the plaintext.
    """

    _value: bytes = attrs.field(alias="value", converter=_to_bytes)

    def reveal(self) -> bytes:
        """Return the secret's bytes."""
        return self._value

    def reveal_text(self) -> str:
        """Return the secret decoded as UTF-8."""
        return self._value.decode("utf-8")

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return self._value == other._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> NoReturn:
        msg = "SecretValue cannot be pickled; pass the store's material instead"
        raise TypeError(msg)


def _to_secret_mapping(items: Mapping[str, SecretValue | str | bytes]) -> dict[str, SecretValue]:
    result: dict[str, SecretValue] = {}
    for name, value in items.items():
        validate_secret_env_name(name)
        secret = value if isinstance(value, SecretValue) else SecretValue(value)
        if not secret.reveal():
            msg = f"secret for {name} is empty"
            raise InvalidSecretError(msg)
        if b"\x00" in secret.reveal():
            msg = f"secret for {name} contains a NUL byte, which cannot travel in an environment variable"
            raise InvalidSecretError(msg)
        if len(secret) > MAX_SECRET_BYTES:
            msg = f"secret for {name} is {len(secret)} bytes; the maximum is {MAX_SECRET_BYTES}"
            raise InvalidSecretError(msg)
        result[name] = secret
    return result


@attrs.frozen(repr=False)
class SecretMaterial(Mapping[str, SecretValue]):
    """The secrets for one sandbox: environment variable name to `SecretValue`.

    Building one validates every name and value. Iteration is in insertion order,
    which providers use to number the files they write.
    """

    _items: dict[str, SecretValue] = attrs.field(alias="items", factory=dict, converter=_to_secret_mapping)

    def __getitem__(self, name: str) -> SecretValue:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"SecretMaterial(names={sorted(self._items)!r})"

    __str__ = __repr__

    def values_for_redaction(self) -> list[bytes]:
        """Return every secret's bytes, longest first, for scrubbing text such as logs."""
        return sorted((v.reveal() for v in self._items.values()), key=len, reverse=True)


def check_env_deliverable(material: SecretMaterial) -> None:
    """Raise `InvalidSecretError` for a secret too long to be one environment variable on Linux.

    Providers whose image exports the secret files as environment variables
    call this before they make anything, so an oversized secret fails early,
    with its name, rather than as a container that exits at start.
    """
    for name, value in material.items():
        limit = MAX_ENV_ENTRY_BYTES - len(name) - 2
        if len(value) > limit:
            msg = (
                f"secret for {name} is {len(value)} bytes, but an environment variable of that "
                f"name can carry at most {limit} bytes on Linux; store a shorter value"
            )
            raise InvalidSecretError(msg)


def redact(text: str, material: SecretMaterial | None, marker: str = "<redacted>") -> str:
    """Replace every secret value of ``material`` found in ``text`` with ``marker``."""
    if not material:
        return text
    for raw in material.values_for_redaction():
        for form in {raw.decode("utf-8", "replace"), raw.decode("latin-1")}:
            if form:
                text = text.replace(form, marker)
    return text
