"""``pi-sandbox doctor``: check the key, the store, the provider, the image and the secrets mount."""

from __future__ import annotations

import os
import secrets as random_tokens
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import attrs
import click
from rich.console import Console
from rich.text import Text

from .._errors import PiSandboxError
from .._plugins import DEFAULT_PROVIDER, PROVIDER_ENV, plugin_manager
from .._provider import Sandbox, SandboxProvider
from .._secrets import SecretMaterial
from .._spec import SECRETS_MOUNT, SessionSpec
from ._context import Settings, key_source, print_json
from ._errors import ExitCode, describe_error

if TYPE_CHECKING:
    from .._store import SqlSecretStore

__all__ = ["doctor"]

_PROBE_COMMAND: Final = ("sleep", "300")
_EXEC_TIMEOUT: Final = 30.0


@attrs.frozen
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: What was checked, in a few words.
        ok: True when it passed, False when it failed, None when it was skipped.
        detail: What was found.
        hint: What to do when it failed.
    """

    name: str
    ok: bool | None
    detail: str
    hint: str = ""


def _failed(name: str, error: PiSandboxError) -> CheckResult:
    failure = describe_error(error)
    return CheckResult(name, False, failure.message, failure.hint)


def _check_key(settings: Settings) -> CheckResult:
    """Load the encryption keys the store would use, without opening the store."""
    from .._store import KeyRing, default_key_file  # noqa: PLC0415 - the store loads SQLAlchemy

    name = "encryption key"
    try:
        source = key_source(settings)
        if source.embedded and not default_key_file().exists():
            detail = f"the embedded store creates its key file {default_key_file()} on first use"
            return CheckResult(name, True, detail)
        keyring = KeyRing.from_environment()
        if keyring is None:
            # Outside the environment, there is only the embedded store's key file.
            keyring = KeyRing.from_file(default_key_file())
    except PiSandboxError as error:
        return _failed(name, error)
    return CheckResult(name, True, f"{source.describe()}: key versions {list(keyring.versions)}")


def _check_store(store: SqlSecretStore) -> CheckResult:
    """Write, read back and delete a disabled probe secret in one store."""
    name = "secret store writable"
    token = random_tokens.token_hex(4)
    probe_name = f"pi-sandbox-doctor-{token}"
    probe_value = random_tokens.token_hex(16)
    try:
        store.put(probe_name, probe_value, env_var=f"PI_SANDBOX_DOCTOR_{token.upper()}", enabled=False)
        try:
            read_back = store.get(probe_name).reveal()
        finally:
            store.delete(probe_name)
    except PiSandboxError as error:
        return _failed(name, error)
    if read_back != probe_value.encode():
        return CheckResult(
            name, False, f"{store.url}: a probe secret read back differently", "report this as a bug"
        )
    return CheckResult(name, True, f"{store.url}: wrote, read back and deleted a probe secret")


def _check_secrets_decrypt(store: SqlSecretStore) -> CheckResult:
    """Decrypt every stored secret, discarding the values."""
    name = "stored secrets decrypt"
    failed = []
    try:
        records = store.list()
        for record in records:
            try:
                store.get(record.name)
            except PiSandboxError:
                failed.append(record.name)
    except PiSandboxError as error:
        return _failed(name, error)
    if failed:
        return CheckResult(
            name,
            False,
            f"{len(failed)} of {len(records)} secrets do not decrypt: {', '.join(failed)}",
            "configure the key ring that encrypted them, or store them again with `pi-sandbox secrets set`",
        )
    enabled = sum(record.enabled for record in records)
    count = "the stored secret decrypts" if len(records) == 1 else f"all {len(records)} secrets decrypt"
    return CheckResult(name, True, f"{count} ({enabled} enabled)")


def _store_checks(settings: Settings) -> Iterator[CheckResult]:
    key = _check_key(settings)
    yield key
    if key.ok is False:
        yield CheckResult("secret store writable", None, "skipped: no usable key")
        return
    try:
        store = settings.store()
    except PiSandboxError as error:
        yield _failed("secret store writable", error)
        return
    with store:
        yield _check_store(store)
        yield _check_secrets_decrypt(store)


def _provider_checks(settings: Settings, *, image: str | None, sandbox: bool) -> Iterator[CheckResult]:
    selected = settings.provider_name or os.environ.get(PROVIDER_ENV) or DEFAULT_PROVIDER
    try:
        provider = settings.provider()
        distribution = plugin_manager().provider_distribution(selected)
    except PiSandboxError as error:
        yield _failed("provider", error)
        return
    with provider:
        yield CheckResult("provider", True, f"{provider.name} from the distribution {distribution}")

        check = provider.check()
        yield CheckResult("engine reachable", check.usable, check.detail, check.hint)
        if not check.usable:
            yield CheckResult("image starts", None, "skipped: the provider is unusable")
            return
        if not sandbox:
            yield CheckResult("image starts", None, "skipped: --no-sandbox")
            return
        yield from _sandbox_checks(provider, image)


def _sandbox_checks(provider: SandboxProvider, image: str | None) -> Iterator[CheckResult]:
    """Start a probe sandbox without network, holding one probe secret, and read the secret inside."""
    shown_image = image or getattr(provider, "image", None) or "the provider's default image"
    token = random_tokens.token_hex(4)
    env_var = f"PI_SANDBOX_DOCTOR_{token.upper()}"
    probe_value = random_tokens.token_hex(16)
    spec = SessionSpec(session_id=f"doctor-{token}", image=image, command=_PROBE_COMMAND, network="none")
    try:
        sandbox = provider.create(spec, SecretMaterial({env_var: probe_value}))
    except PiSandboxError as error:
        yield _failed("image starts", error)
        return
    try:
        yield CheckResult("image starts", True, f"a sandbox from {shown_image} started")
        if not provider.capabilities.exec:
            yield CheckResult("secrets visible in the sandbox", None, "skipped: the provider cannot exec")
            return
        yield _check_secret_visible(sandbox, env_var, probe_value)
    finally:
        sandbox.terminate(remove_data=True, timeout=1)


def _check_secret_visible(sandbox: Sandbox, env_var: str, probe_value: str) -> CheckResult:
    name = "secrets visible in the sandbox"
    hint = (
        "the engine does not see the provider's secrets folder: on a remote engine or Docker "
        "Desktop, pass -o secrets_dir=PATH with a folder the engine shares with this host"
    )
    try:
        manifest = sandbox.exec(["cat", f"{SECRETS_MOUNT}/manifest"], timeout=_EXEC_TIMEOUT)
        if not manifest.ok:
            return CheckResult(name, False, f"{SECRETS_MOUNT}/manifest is not readable in the sandbox", hint)
        files = dict(
            line.split("\t", 1)
            for line in manifest.stdout.decode("utf-8", "replace").splitlines()
            if "\t" in line
        )
        if env_var not in files:
            return CheckResult(name, False, f"{SECRETS_MOUNT}/manifest does not list the probe secret", hint)
        content = sandbox.exec(["cat", f"{SECRETS_MOUNT}/{files[env_var]}"], timeout=_EXEC_TIMEOUT)
    except PiSandboxError as error:
        return _failed(name, error)
    if not content.ok or content.stdout != probe_value.encode():
        return CheckResult(name, False, "the probe secret's file is missing or differs in the sandbox", hint)
    return CheckResult(name, True, f"the sandbox's user reads a probe secret under {SECRETS_MOUNT}")


_SYMBOLS: Final = {True: ("✓", "green"), False: ("✗", "red"), None: ("-", "yellow")}


def _show(console: Console, result: CheckResult) -> None:
    symbol, style = _SYMBOLS[result.ok]
    line = Text()
    line.append(symbol, style=style)
    line.append(f" {result.name}: ", style="bold")
    line.append(result.detail)
    console.print(line)
    if result.ok is False and result.hint:
        console.print(Text(f"  fix: {result.hint}"))


@click.command("doctor")
@click.option(
    "--image", metavar="IMAGE", help="Image to start the probe sandbox from [default: the provider's]."
)
@click.option("--no-sandbox", is_flag=True, help="Skip the checks that start a probe sandbox.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.pass_context
def doctor(ctx: click.Context, image: str | None, no_sandbox: bool, as_json: bool) -> None:
    """Check that secrets can be stored and that sandboxes start and receive them.

    \b
    Checks, in order: the encryption key is configured; the store accepts,
    returns and deletes a probe secret; every stored secret decrypts; the
    provider loads; its engine is reachable; a probe sandbox (no network) starts
    from the image; and the sandbox reads a probe secret from /run/secrets.
    Exits with 1 when any check fails.
    """
    settings: Settings = ctx.obj
    console = Console(highlight=False, soft_wrap=True)

    results: list[CheckResult] = []
    for check_group in (
        _store_checks(settings),
        _provider_checks(settings, image=image, sandbox=not no_sandbox),
    ):
        for result in check_group:
            results.append(result)
            # Each line appears as soon as its check is done; the probe sandbox takes seconds.
            if not as_json:
                _show(console, result)

    passed = all(result.ok is not False for result in results)
    if as_json:
        print_json({"ok": passed, "checks": [attrs.asdict(result) for result in results]})
    if not passed:
        ctx.exit(ExitCode.FAILED)
