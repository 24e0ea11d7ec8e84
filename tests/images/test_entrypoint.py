"""The image entrypoint, run directly with bash over temporary secrets folders."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from entrypoint_helpers import (
    ENTRYPOINT,
    EXIT_INVALID_SECRETS,
    EXIT_SETUP_FAILED,
    dump_env_command,
    make_canary,
    output_contains,
    read_env_dump,
    run_entrypoint,
    stderr_text,
    write_manifest,
)

# Special characters go on both sides of the canary, so that leading and
# trailing bytes are checked too.
VALUE_CASES = {
    "quotes": b"it's \"quoted\" '",
    "command-substitution": b"$(id)",
    "backticks": b"`id`",
    "variables": b"$HOME ${PATH} $1 $@",
    "equals-signs": b"a=b==c=",
    "spaces": b"  two  spaces  ",
    "inner-newline": b"first\nsecond",
    "trailing-newlines": b"\n\n",
    "carriage-return": b"line\r\n",
    "tabs": b"\ta\tb\t",
    "backslashes": b"back\\slash\\n\\",
    "unicode": "päß 🔑 ключ".encode(),
    "invalid-utf-8": b"\xff\xfe\x80",
    "glob-characters": b"* ? [a-z] ~",
    "printf-format": b"%s %n %% %b",
    "option-like": b"-e -n --",
    "shell-operators": b"; rm -rf / | cat & >x <y",
    "arithmetic": b"a[$(id)] $((1+1))",
}

# The longest value Linux passes to a new program in a variable named BIG:
# MAX_ARG_STRLEN (32 pages) minus "BIG=" and the terminating NUL.
MAX_VALUE_FOR_BIG = 32 * os.sysconf("SC_PAGE_SIZE") - len("BIG") - 2


def _exported(
    tmp_path: Path, entries: list[tuple[str, bytes]]
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    secrets_dir = tmp_path / "secrets"
    write_manifest(secrets_dir, entries)
    out = tmp_path / "env.json"
    result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)
    return result, out


class TestManifestValues:
    @pytest.mark.parametrize("special", list(VALUE_CASES.values()), ids=list(VALUE_CASES))
    def test_value_arrives_byte_exact(self, tmp_path: Path, special: bytes) -> None:
        """Each value reaches the command's environment unchanged and unevaluated."""
        canary = make_canary()
        value = special + canary.encode() + special

        result, out = _exported(tmp_path, [("SECRET_VALUE", value)])

        assert result.returncode == 0, stderr_text(result)
        assert read_env_dump(out)[b"SECRET_VALUE"] == value
        assert not output_contains(result, canary)

    def test_all_values_arrive_together(self, tmp_path: Path) -> None:
        """A manifest with many lines exports every value under its own name."""
        canary = make_canary()
        entries = [
            (f"SECRET_{index}", special + canary.encode())
            for index, special in enumerate(VALUE_CASES.values())
        ]

        result, out = _exported(tmp_path, entries)

        assert result.returncode == 0, stderr_text(result)
        environment = read_env_dump(out)
        for name, value in entries:
            assert environment[name.encode()] == value, name
        assert not output_contains(result, canary)

    def test_value_at_kernel_limit_arrives(self, tmp_path: Path) -> None:
        """A value of exactly the largest size Linux accepts for its name arrives whole."""
        canary = make_canary().encode()
        value = canary + b"x" * (MAX_VALUE_FOR_BIG - len(canary))

        result, out = _exported(tmp_path, [("BIG", value)])

        assert result.returncode == 0, stderr_text(result)
        assert read_env_dump(out)[b"BIG"] == value
        assert not output_contains(result, canary)

    def test_name_and_case_are_kept(self, tmp_path: Path) -> None:
        """Names keep their case, and a secret replaces a variable of the same name."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        write_manifest(secrets_dir, [("lower_name", canary + b"-1"), ("EXISTING", canary + b"-2")])
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir, extra_env={"EXISTING": "old"})

        assert result.returncode == 0, stderr_text(result)
        environment = read_env_dump(out)
        assert environment[b"lower_name"] == canary + b"-1"
        assert environment[b"EXISTING"] == canary + b"-2"
        assert b"LOWER_NAME" not in environment

    def test_names_of_entrypoint_locals_are_exported(self, tmp_path: Path) -> None:
        """Secrets named like the script's own local variables still reach the command."""
        canary = make_canary().encode()
        names = ["line", "name", "value", "file", "context", "size", "limit", "dir", "status", "origin"]

        result, out = _exported(tmp_path, [(name, canary + name.encode()) for name in names])

        assert result.returncode == 0, stderr_text(result)
        environment = read_env_dump(out)
        for name in names:
            assert environment[name.encode()] == canary + name.encode(), name

    def test_locale_variable_value_not_printed(self, tmp_path: Path) -> None:
        """A secret in LC_ALL is exported without bash quoting it in a locale warning."""
        canary = make_canary()

        result, out = _exported(tmp_path, [("LC_ALL", canary.encode())])

        assert result.returncode == 0, stderr_text(result)
        assert read_env_dump(out)[b"LC_ALL"] == canary.encode()
        assert not output_contains(result, canary)


class TestManifestFormat:
    def test_empty_lines_skipped(self, tmp_path: Path) -> None:
        """Empty lines anywhere in the manifest are ignored, and numbering counts them."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / "s-0").write_bytes(canary + b"-a")
        (secrets_dir / "s-1").write_bytes(canary + b"-b")
        (secrets_dir / "manifest").write_bytes(b"\nFIRST\ts-0\n\n\nSECOND\ts-1\n\n")
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0, stderr_text(result)
        environment = read_env_dump(out)
        assert environment[b"FIRST"] == canary + b"-a"
        assert environment[b"SECOND"] == canary + b"-b"

    def test_last_line_without_newline_read(self, tmp_path: Path) -> None:
        """A final line that lacks its newline is still exported."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / "s-0").write_bytes(canary + b"-a")
        (secrets_dir / "s-1").write_bytes(canary + b"-b")
        (secrets_dir / "manifest").write_bytes(b"FIRST\ts-0\nLAST\ts-1")
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0, stderr_text(result)
        assert read_env_dump(out)[b"LAST"] == canary + b"-b"

    def test_unlisted_files_ignored(self, tmp_path: Path) -> None:
        """In manifest mode, files the manifest does not name are not exported."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        write_manifest(secrets_dir, [("LISTED", canary + b"-listed")])
        (secrets_dir / "UNLISTED").write_bytes(canary + b"-unlisted")
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0, stderr_text(result)
        environment = read_env_dump(out)
        assert b"UNLISTED" not in environment
        assert environment[b"LISTED"] == canary + b"-listed"

    def test_empty_manifest_exports_nothing(self, tmp_path: Path) -> None:
        """An empty manifest is valid and the command runs without secrets."""
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / "manifest").write_bytes(b"")
        (secrets_dir / "NOT_LISTED").write_bytes(b"x")
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0, stderr_text(result)
        assert b"NOT_LISTED" not in read_env_dump(out)


# Each attack writes a secrets folder and returns the manifest line number the
# error must name. Every file holds the canary, which must never be printed.
Attack = Callable[[Path, bytes], int]


def _files(folder: Path, canary: bytes, count: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"s-{index}").write_bytes(canary + f"-{index}".encode())


def _manifest(folder: Path, text: bytes) -> None:
    (folder / "manifest").write_bytes(text)


def _attack_newline_in_name(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"GOOD\ts-0\nBAD\nNAME\ts-1\n")
    return 2


def _attack_parent_path(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    (folder.parent / "outside").write_bytes(canary + b"-outside")
    _manifest(folder, b"GOOD\ts-0\nNAME\t../outside\n")
    return 2


def _attack_subfolder_path(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    (folder / "a").mkdir()
    (folder / "a" / "b").write_bytes(canary + b"-nested")
    _manifest(folder, b"NAME\ta/b\n")
    return 1


def _attack_absolute_path(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"NAME\t/etc/hostname\n")
    return 1


def _attack_symlink_out(folder: Path, canary: bytes) -> int:
    _files(folder, canary, count=1)
    (folder.parent / "outside").write_bytes(canary + b"-outside")
    (folder / "s-1").symlink_to("../outside")
    _manifest(folder, b"GOOD\ts-0\nNAME\ts-1\n")
    return 2


def _attack_symlink_inside(folder: Path, canary: bytes) -> int:
    _files(folder, canary, count=1)
    (folder / "s-1").symlink_to("s-0")
    _manifest(folder, b"NAME\ts-1\n")
    return 1


def _attack_missing_file(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"GOOD\ts-0\nOTHER\ts-1\nNAME\ts-7\n")
    return 3


def _attack_folder_as_file(folder: Path, canary: bytes) -> int:
    _files(folder, canary, count=1)
    (folder / "s-1").mkdir()
    _manifest(folder, b"NAME\ts-1\n")
    return 1


def _attack_duplicate_name(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"NAME\ts-0\nOTHER\ts-1\nNAME\ts-1\n")
    return 3


def _attack_bad_file_name(file_field: bytes) -> Attack:
    def attack(folder: Path, canary: bytes) -> int:
        _files(folder, canary)
        (folder / "secret.txt").write_bytes(canary + b"-txt")
        _manifest(folder, b"GOOD\ts-0\nNAME\t" + file_field + b"\n")
        return 2

    return attack


def _attack_reserved(name: bytes) -> Attack:
    def attack(folder: Path, canary: bytes) -> int:
        _files(folder, canary)
        _manifest(folder, b"GOOD\ts-0\n" + name + b"\ts-1\n")
        return 2

    return attack


def _attack_no_tab(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"NAME s-0\n")
    return 1


def _attack_blank_but_not_empty(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"GOOD\ts-0\n   \n")
    return 2


def _attack_nul_in_value(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    (folder / "s-1").write_bytes(canary + b"\0" + canary)
    _manifest(folder, b"GOOD\ts-0\nNAME\ts-1\n")
    return 2


def _attack_nul_in_manifest(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"GOOD\ts-0\nNA\0ME\ts-1\n")
    return 2


def _attack_value_as_name(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"sk-" + canary + b" key\ts-0\n")
    return 1


def _attack_name_starts_with_digit(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"1NAME\ts-0\n")
    return 1


def _attack_non_ascii_name(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, "NÄME\ts-0\n".encode())
    return 1


def _attack_name_too_long(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"A" * 256 + b"\ts-0\n")
    return 1


def _attack_empty_value(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    (folder / "s-1").write_bytes(b"")
    _manifest(folder, b"GOOD\ts-0\nNAME\ts-1\n")
    return 2


def _attack_value_too_large(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    (folder / "s-1").write_bytes(canary + b"x" * (500 * 1024))
    _manifest(folder, b"GOOD\ts-0\nNAME\ts-1\n")
    return 2


def _attack_value_one_over_limit(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    (folder / "s-1").write_bytes(canary + b"x" * (MAX_VALUE_FOR_BIG + 1 - len(canary)))
    _manifest(folder, b"BIG\ts-1\n")
    return 1


def _attack_shell_variable(name: bytes) -> Attack:
    def attack(folder: Path, canary: bytes) -> int:
        _files(folder, canary)
        marker = folder.parent / "arithmetic-ran"
        # Assigning this to an integer variable would run the touch.
        (folder / "s-1").write_bytes(b"a[$(touch " + str(marker).encode() + b")]" + canary)
        _manifest(folder, b"GOOD\ts-0\n" + name + b"\ts-1\n")
        return 2

    return attack


def _attack_internal_prefix(folder: Path, canary: bytes) -> int:
    _files(folder, canary)
    _manifest(folder, b"_pi_secret_values\ts-0\n")
    return 1


ATTACKS: dict[str, tuple[Attack, str]] = {
    "newline-inside-name": (_attack_newline_in_name, "no tab"),
    "parent-path": (_attack_parent_path, "invalid secret file name"),
    "subfolder-path": (_attack_subfolder_path, "invalid secret file name"),
    "absolute-path": (_attack_absolute_path, "invalid secret file name"),
    "symlink-out-of-folder": (_attack_symlink_out, "symbolic link"),
    "symlink-inside-folder": (_attack_symlink_inside, "symbolic link"),
    "missing-file": (_attack_missing_file, "does not exist"),
    "folder-as-file": (_attack_folder_as_file, "not a regular file"),
    "duplicate-name": (_attack_duplicate_name, "already set by line 1"),
    "file-name-txt": (_attack_bad_file_name(b"secret.txt"), "invalid secret file name"),
    "file-name-no-digits": (_attack_bad_file_name(b"s-"), "invalid secret file name"),
    "file-name-suffix": (_attack_bad_file_name(b"s-1x"), "invalid secret file name"),
    "file-name-upper-case": (_attack_bad_file_name(b"S-1"), "invalid secret file name"),
    "file-name-trailing-space": (_attack_bad_file_name(b"s-1 "), "invalid secret file name"),
    "file-name-crlf": (_attack_bad_file_name(b"s-1\r"), "invalid secret file name"),
    "file-name-second-tab": (_attack_bad_file_name(b"s-1\textra"), "invalid secret file name"),
    "reserved-ld-preload": (_attack_reserved(b"LD_PRELOAD"), "reserved"),
    "reserved-ld-lower-case": (_attack_reserved(b"ld_library_path"), "reserved"),
    "reserved-path": (_attack_reserved(b"PATH"), "reserved"),
    "reserved-node-options": (_attack_reserved(b"NODE_OPTIONS"), "reserved"),
    "reserved-node-options-mixed-case": (_attack_reserved(b"Node_Options"), "reserved"),
    "reserved-npm-config": (_attack_reserved(b"NPM_CONFIG_REGISTRY"), "reserved"),
    "reserved-bash-env": (_attack_reserved(b"BASH_ENV"), "reserved"),
    "reserved-secrets-dir": (_attack_reserved(b"PI_SECRETS_DIR"), "reserved"),
    "line-without-tab": (_attack_no_tab, "no tab"),
    "blank-line-with-spaces": (_attack_blank_but_not_empty, "no tab"),
    "nul-in-value": (_attack_nul_in_value, "NUL byte"),
    "nul-in-manifest": (_attack_nul_in_manifest, "NUL byte"),
    "value-in-name-position": (_attack_value_as_name, "invalid environment variable name"),
    "name-starts-with-digit": (_attack_name_starts_with_digit, "invalid environment variable name"),
    "non-ascii-name": (_attack_non_ascii_name, "invalid environment variable name"),
    "name-too-long": (_attack_name_too_long, "256 characters"),
    "empty-value": (_attack_empty_value, "is empty"),
    "value-500-kib": (_attack_value_too_large, "Linux passes at most"),
    "value-one-over-limit": (_attack_value_one_over_limit, "Linux passes at most"),
    # Names bash gives a meaning of its own are on the reserved list, so the
    # Python side rejects them before a sandbox is made; the entrypoint's
    # attribute check behind the list catches any a newer bash adds.
    "integer-variable-random": (_attack_shell_variable(b"RANDOM"), "reserved"),
    "integer-variable-seconds": (_attack_shell_variable(b"SECONDS"), "reserved"),
    "readonly-variable-uid": (_attack_shell_variable(b"UID"), "reserved"),
    "array-variable-groups": (_attack_shell_variable(b"GROUPS"), "reserved"),
    "dynamic-variable-epochseconds": (_attack_shell_variable(b"EPOCHSECONDS"), "reserved"),
    "internal-prefix": (_attack_internal_prefix, "reserved"),
}


class TestManifestAttacks:
    @pytest.mark.parametrize(("attack", "fragment"), list(ATTACKS.values()), ids=list(ATTACKS))
    def test_attack_stops_before_command(self, tmp_path: Path, attack: Attack, fragment: str) -> None:
        """A malformed manifest exits 65 before the command, naming the line, never a value."""
        canary = make_canary()
        secrets_dir = tmp_path / "secrets"
        line = attack(secrets_dir, canary.encode())
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        message = stderr_text(result) if not output_contains(result, canary) else "<output holds the canary>"
        assert result.returncode == EXIT_INVALID_SECRETS, message
        assert not out.exists(), "the command ran"
        assert not output_contains(result, canary), "a secret value appeared in the output"
        assert f"line {line}" in message
        assert fragment in message
        assert result.stdout == b""
        assert not (tmp_path / "arithmetic-ran").exists(), "a value was evaluated as arithmetic"

    def test_manifest_symlink_rejected(self, tmp_path: Path) -> None:
        """A manifest that is a symbolic link stops the container."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        _files(secrets_dir, canary)
        (tmp_path / "elsewhere").write_bytes(b"NAME\ts-0\n")
        (secrets_dir / "manifest").symlink_to(tmp_path / "elsewhere")
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == EXIT_INVALID_SECRETS
        assert not out.exists()
        assert "not a regular file" in stderr_text(result)


class TestLegacyMode:
    def test_files_exported_upper_case(self, tmp_path: Path) -> None:
        """Without a manifest, each regular file becomes its upper-cased name."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / "anthropic_api_key").write_bytes(canary + b"-a\n\n")
        (secrets_dir / "Mixed_Case").write_bytes(b"$(id) " + canary + b"-b")
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0, stderr_text(result)
        environment = read_env_dump(out)
        assert environment[b"ANTHROPIC_API_KEY"] == canary + b"-a\n\n"
        assert environment[b"MIXED_CASE"] == b"$(id) " + canary + b"-b"
        assert b"anthropic_api_key" not in environment
        assert not output_contains(result, canary)

    def test_unusable_files_skipped_with_warning(self, tmp_path: Path) -> None:
        """Files that cannot be exported are skipped, each named in a warning, and the command runs."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / "good_key").write_bytes(canary + b"-good")
        skipped = {
            "my-key": canary + b"-dash",
            "ld_preload": canary + b"-reserved",
            "path": canary + b"-path",
            "nulled": canary + b"\0" + canary,
            "empty": b"",
            "bad\nname": canary + b"-newline",
            "dup": canary + b"-dup-lower",
        }
        for name, value in skipped.items():
            (secrets_dir / name).write_bytes(value)
        (secrets_dir / "DUP").write_bytes(canary + b"-dup-upper")
        (tmp_path / "outside").write_bytes(canary + b"-outside")
        (secrets_dir / "linked").symlink_to("../outside")
        (secrets_dir / "subdir").mkdir()
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0, "the command did not run"
        assert not output_contains(result, canary), "a secret value appeared in the output"
        message = stderr_text(result)
        environment = read_env_dump(out)
        assert environment[b"GOOD_KEY"] == canary + b"-good"
        for name in ["my-key", "ld_preload", "path", "nulled", "empty", "linked", "subdir"]:
            assert f"skipped secrets file {name}:" in message, name
        assert "skipped secrets file $'bad\\nname':" in message
        assert "DUP is already set" in message
        assert environment[b"DUP"] == canary + b"-dup-upper"
        for env_name in [b"MY-KEY", b"LD_PRELOAD", b"NULLED", b"EMPTY", b"LINKED", b"SUBDIR"]:
            assert env_name not in environment, env_name
        assert environment.get(b"PATH") != canary + b"-path"

    def test_shell_variable_names_skipped(self, tmp_path: Path) -> None:
        """Files named after bash's own variables are skipped with a warning, not run."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        marker = tmp_path / "arithmetic-ran"
        for name in ["random", "uid", "epochseconds"]:
            (secrets_dir / name).write_bytes(b"a[$(touch " + str(marker).encode() + b")]" + canary)
        (secrets_dir / "kept").write_bytes(canary + b"-kept")
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0, "the command did not run"
        assert not output_contains(result, canary), "a secret value appeared in the output"
        assert not marker.exists(), "a value was evaluated as arithmetic"
        message = stderr_text(result)
        for name in ["random", "uid", "epochseconds"]:
            assert f"skipped secrets file {name}:" in message, name
        environment = read_env_dump(out)
        assert environment[b"KEPT"] == canary + b"-kept"
        for env_name in [b"RANDOM", b"UID", b"EPOCHSECONDS"]:
            assert canary not in environment.get(env_name, b""), env_name

    def test_dotfiles_ignored_silently(self, tmp_path: Path) -> None:
        """Files whose names start with a dot are not exported and not mentioned."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        (secrets_dir / ".hidden").write_bytes(canary)
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=secrets_dir)

        assert result.returncode == 0
        assert b".HIDDEN" not in read_env_dump(out)
        assert b"hidden" not in result.stderr

    def test_missing_folder_runs_command(self, tmp_path: Path) -> None:
        """Without a secrets folder the command runs with no secrets and no message."""
        out = tmp_path / "env.json"

        result = run_entrypoint(dump_env_command(out), secrets_dir=tmp_path / "absent")

        assert result.returncode == 0
        assert out.exists()
        assert result.stderr == b""


class TestCommand:
    def test_default_command_is_pi_rpc(self, tmp_path: Path) -> None:
        """With no arguments the entrypoint runs ``pi --mode rpc``."""
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        record = tmp_path / "args"
        fake_pi = bin_dir / "pi"
        fake_pi.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
        fake_pi.chmod(0o755)

        result = run_entrypoint(
            [], secrets_dir=tmp_path / "absent", extra_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}
        )

        assert result.returncode == 0, stderr_text(result)
        assert record.read_text().splitlines() == ["--mode", "rpc"]

    def test_exit_status_passed_through(self, tmp_path: Path) -> None:
        """The command's exit status becomes the container's."""
        result = run_entrypoint(["sh", "-c", "exit 7"], secrets_dir=tmp_path / "absent")

        assert result.returncode == 7

    def test_command_replaces_entrypoint(self, tmp_path: Path) -> None:
        """The command keeps the entrypoint's process id, so it gets signals directly."""
        out = tmp_path / "pid"
        env = {"PATH": os.environ["PATH"], "PI_SECRETS_DIR": str(tmp_path / "absent")}
        script = f"import os; open({str(out)!r}, 'w').write(str(os.getpid()))"

        process = subprocess.Popen(["bash", str(ENTRYPOINT), sys.executable, "-c", script], env=env)
        process.wait(timeout=60)

        assert process.returncode == 0
        assert int(out.read_text()) == process.pid

    def test_stdin_reaches_command(self, tmp_path: Path) -> None:
        """Standard input goes to the command untouched, as pi's RPC stream needs."""
        request = b'{"type":"get_state"}\n'
        script = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"

        result = run_entrypoint(
            [sys.executable, "-c", script], secrets_dir=tmp_path / "absent", stdin=request
        )

        assert result.returncode == 0
        assert result.stdout == request

    def test_missing_command_exits_127(self, tmp_path: Path) -> None:
        """A command that does not exist exits 127 with a message."""
        result = run_entrypoint(["no-such-command-here"], secrets_dir=tmp_path / "absent")

        assert result.returncode == 127
        assert "could not start no-such-command-here" in stderr_text(result)

    def test_runs_through_shebang(self, tmp_path: Path) -> None:
        """The script runs as an executable, the way Docker starts it."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        write_manifest(secrets_dir, [("FROM_SHEBANG", canary)])
        out = tmp_path / "env.json"
        env = {"PATH": os.environ["PATH"], "PI_SECRETS_DIR": str(secrets_dir)}

        result = subprocess.run(
            [str(ENTRYPOINT), *dump_env_command(out)], env=env, capture_output=True, timeout=60, check=False
        )

        assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
        assert result.returncode == 0
        assert read_env_dump(out)[b"FROM_SHEBANG"] == canary


class TestLanguageSetup:
    @pytest.fixture
    def setup_script(self, tmp_path: Path) -> Path:
        """Return a fake codex-universal setup script that records its environment."""
        script = tmp_path / "setup_universal.sh"
        script.write_text(
            "#!/bin/bash\n"
            "echo setup-stdout-marker\n"
            f"env > {tmp_path / 'setup-env'}\n"
            'exit "${FAKE_SETUP_STATUS:-0}"\n'
        )
        script.chmod(0o755)
        return script

    def test_runs_before_secrets_with_output_on_stderr(self, tmp_path: Path, setup_script: Path) -> None:
        """With CODEX_ENV_* set, setup runs without the secrets and prints only to stderr."""
        canary = make_canary().encode()
        secrets_dir = tmp_path / "secrets"
        write_manifest(secrets_dir, [("API_KEY", canary)])
        out = tmp_path / "env.json"

        result = run_entrypoint(
            dump_env_command(out),
            secrets_dir=secrets_dir,
            extra_env={"CODEX_ENV_PYTHON_VERSION": "3.12", "PI_CODEX_SETUP_SCRIPT": str(setup_script)},
        )

        assert result.returncode == 0, stderr_text(result)
        assert b"setup-stdout-marker" in result.stderr
        assert b"setup-stdout-marker" not in result.stdout
        setup_env = (tmp_path / "setup-env").read_bytes()
        assert b"CODEX_ENV_PYTHON_VERSION=3.12" in setup_env
        assert canary not in setup_env, "the setup script saw a secret"
        assert read_env_dump(out)[b"API_KEY"] == canary

    def test_skipped_without_codex_env(self, tmp_path: Path, setup_script: Path) -> None:
        """Without any CODEX_ENV_* variable the setup script does not run."""
        out = tmp_path / "env.json"

        result = run_entrypoint(
            dump_env_command(out),
            secrets_dir=tmp_path / "absent",
            extra_env={"PI_CODEX_SETUP_SCRIPT": str(setup_script)},
        )

        assert result.returncode == 0
        assert not (tmp_path / "setup-env").exists()

    def test_failure_stops_before_command(self, tmp_path: Path, setup_script: Path) -> None:
        """A failing setup exits 78 and the command never runs."""
        out = tmp_path / "env.json"

        result = run_entrypoint(
            dump_env_command(out),
            secrets_dir=tmp_path / "absent",
            extra_env={
                "CODEX_ENV_NODE_VERSION": "99",
                "PI_CODEX_SETUP_SCRIPT": str(setup_script),
                "FAKE_SETUP_STATUS": "3",
            },
        )

        assert result.returncode == EXIT_SETUP_FAILED
        assert not out.exists()
        assert "exit status 3" in stderr_text(result)

    def test_missing_script_warns_and_continues(self, tmp_path: Path) -> None:
        """An image without codex-universal's script warns and still runs the command."""
        out = tmp_path / "env.json"

        result = run_entrypoint(
            dump_env_command(out),
            secrets_dir=tmp_path / "absent",
            extra_env={"CODEX_ENV_GO_VERSION": "1.23", "PI_CODEX_SETUP_SCRIPT": str(tmp_path / "none.sh")},
        )

        assert result.returncode == 0
        assert out.exists()
        assert "does not exist" in stderr_text(result)

    def test_setup_does_not_consume_stdin(self, tmp_path: Path, setup_script: Path) -> None:
        """The setup script reads nothing from stdin, so pi gets every request."""
        setup_script.write_text("#!/bin/bash\ncat > /dev/null\n")
        request = b'{"type":"get_state"}\n'
        script = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"

        result = run_entrypoint(
            [sys.executable, "-c", script],
            secrets_dir=tmp_path / "absent",
            extra_env={"CODEX_ENV_PYTHON_VERSION": "3.12", "PI_CODEX_SETUP_SCRIPT": str(setup_script)},
            stdin=request,
        )

        assert result.returncode == 0
        assert result.stdout == request


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_entrypoint_passes_shellcheck() -> None:
    """The entrypoint has no shellcheck findings."""
    result = subprocess.run(
        ["shellcheck", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stdout
