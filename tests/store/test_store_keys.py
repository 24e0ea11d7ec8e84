"""Key rings: parsing, key files, the embedded default key, and missing keys."""

from __future__ import annotations

import base64
import logging
import multiprocessing
import pickle
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine
from store_helpers import open_embedded_store

from pi_sandbox._errors import DecryptionError, KeyConfigurationError
from pi_sandbox._store import (
    DATABASE_URL_ENV,
    ENCRYPTION_KEY_ENV,
    ENCRYPTION_KEY_FILE_ENV,
    KeyRing,
    SqlSecretStore,
    default_database_path,
    default_key_file,
    open_secret_store,
)

KEY_ONE = bytes(range(32))
KEY_TWO = bytes(range(100, 132))


def encode(key: bytes) -> str:
    """Return the standard base64 of ``key``."""
    return base64.b64encode(key).decode()


def write_key_file(path: Path, text: str, mode: int) -> Path:
    """Write ``text`` to ``path`` and set its mode."""
    path.write_text(text)
    path.chmod(mode)
    return path


class TestParsing:
    """KeyRing.from_string reads the variable and key file format."""

    def test_bare_key_is_version_one(self) -> None:
        """One base64 key without a version becomes version 1, the primary."""
        keyring = KeyRing.from_string(encode(KEY_ONE))

        assert keyring.versions == (1,)
        assert keyring.primary_version == 1

    @pytest.mark.parametrize(
        "text",
        [
            f"2:{encode(KEY_TWO)},1:{encode(KEY_ONE)}",
            f"1:{encode(KEY_ONE)},2:{encode(KEY_TWO)}",
            f" 1:{encode(KEY_ONE)} , 2:{encode(KEY_TWO)} ",
            f"# keys\n2:{encode(KEY_TWO)}\n\n1:{encode(KEY_ONE)}\n",
        ],
        ids=["highest-first", "lowest-first", "spaces", "lines-and-comments"],
    )
    def test_highest_version_is_primary_in_any_order(self, text: str) -> None:
        """Entry order does not matter: the highest version is the primary."""
        keyring = KeyRing.from_string(text)

        assert keyring.versions == (2, 1)
        assert keyring.primary_version == 2

    def test_urlsafe_base64_is_accepted(self) -> None:
        """URL-safe base64 decodes to the same key as standard base64."""
        key = b"\xfb\xff" * 16
        urlsafe = base64.urlsafe_b64encode(key).decode()
        assert "-" in urlsafe or "_" in urlsafe

        keyring = KeyRing.from_string(f"3:{urlsafe}")

        assert keyring.export() == f"3:{encode(key)}"

    def test_export_round_trips(self) -> None:
        """export() writes what from_string reads, primary first."""
        keyring = KeyRing({1: KEY_ONE, 2: KEY_TWO})

        exported = keyring.export()

        assert exported == f"2:{encode(KEY_TWO)},1:{encode(KEY_ONE)}"
        assert KeyRing.from_string(exported).export() == exported

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "contains no key"),
            ("# only a comment", "contains no key"),
            ("not base64 at all!", "is not valid base64"),
            (encode(KEY_ONE[:16]), "decodes to 16 bytes"),
            (f"1:{encode(KEY_ONE)},1:{encode(KEY_TWO)}", "lists key version 1 twice"),
            (f"0:{encode(KEY_ONE)}", "out of range"),
            (f"2147483648:{encode(KEY_ONE)}", "out of range"),
            (f"2:{encode(KEY_TWO)},{encode(KEY_ONE)}", "entry 2 .* has no version"),
            (f"x:{encode(KEY_ONE)}", "is not valid base64"),
        ],
        ids=[
            "empty",
            "comment-only",
            "bad-base64",
            "short-key",
            "duplicate-version",
            "version-zero",
            "version-too-large",
            "unversioned-in-list",
            "non-numeric-version",
        ],
    )
    def test_malformed_keys_are_rejected(self, text: str, message: str) -> None:
        """Each malformed input raises KeyConfigurationError naming the variable."""
        with pytest.raises(KeyConfigurationError, match=message) as caught:
            KeyRing.from_string(text)

        assert ENCRYPTION_KEY_ENV in str(caught.value)

    def test_errors_never_quote_key_text(self) -> None:
        """A wrong-length key is described, not shown."""
        short = encode(b"k" * 20)

        with pytest.raises(KeyConfigurationError) as caught:
            KeyRing.from_string(f"4:{short}")

        assert short not in str(caught.value)


class TestKeyRing:
    """The KeyRing object itself."""

    def test_repr_shows_versions_not_keys(self) -> None:
        """repr and str list versions only."""
        keyring = KeyRing({1: KEY_ONE, 2: KEY_TWO})

        shown = repr(keyring) + str(keyring)

        assert repr(keyring) == "KeyRing(versions=[2, 1], primary=2)"
        assert encode(KEY_ONE) not in shown
        assert repr(KEY_ONE) not in shown
        assert KEY_ONE.hex() not in shown

    def test_cannot_be_pickled(self) -> None:
        """Pickling would copy the keys into whatever stores the pickle."""
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(KeyRing.generate())

    def test_with_new_key_adds_primary(self) -> None:
        """The new key gets the next version and becomes the primary."""
        keyring = KeyRing({1: KEY_ONE, 4: KEY_TWO})

        rotated = keyring.with_new_key()

        assert rotated.versions == (5, 4, 1)
        assert rotated.primary_version == 5
        assert keyring.versions == (4, 1)

    def test_without_drops_old_key(self) -> None:
        """An old version can be dropped; the primary and unknown versions cannot."""
        keyring = KeyRing({1: KEY_ONE, 2: KEY_TWO})

        assert keyring.without(1).versions == (2,)
        with pytest.raises(KeyConfigurationError, match="primary key and cannot be removed"):
            keyring.without(2)
        with pytest.raises(KeyConfigurationError, match="not in the key ring"):
            keyring.without(3)

    @pytest.mark.parametrize(
        "keys",
        [{}, {1: b"short"}, {0: KEY_ONE}, {True: KEY_ONE}],
        ids=["empty", "short-key", "version-zero", "bool-version"],
    )
    def test_constructor_checks_keys(self, keys: dict[int, bytes]) -> None:
        """The constructor rejects empty rings, wrong lengths and bad versions."""
        with pytest.raises(KeyConfigurationError):
            KeyRing(keys)

    def test_membership_by_version(self) -> None:
        """`in` tests whether a key version is present."""
        keyring = KeyRing({1: KEY_ONE})

        assert 1 in keyring
        assert 2 not in keyring


class TestKeyFiles:
    """Key files must be private to their owner."""

    def test_private_file_loads(self, tmp_path: Path) -> None:
        """A mode 0600 file in the variable format loads."""
        path = write_key_file(tmp_path / "keys", f"2:{encode(KEY_TWO)}\n1:{encode(KEY_ONE)}\n", 0o600)

        keyring = KeyRing.from_file(path)

        assert keyring.versions == (2, 1)

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
    def test_group_or_other_access_is_rejected(self, tmp_path: Path, mode: int) -> None:
        """Any group or other permission bit is refused with the chmod command to run."""
        path = write_key_file(tmp_path / "keys", encode(KEY_ONE), mode)

        with pytest.raises(KeyConfigurationError) as caught:
            KeyRing.from_file(path)

        assert f"chmod 600 {path}" in str(caught.value)
        assert f"{mode:04o}" in str(caught.value)

    def test_missing_file_is_reported(self, tmp_path: Path) -> None:
        """A missing file names its path."""
        with pytest.raises(KeyConfigurationError, match="does not exist"):
            KeyRing.from_file(tmp_path / "absent")

    def test_malformed_file_names_the_file(self, tmp_path: Path) -> None:
        """Parse errors name the file that is wrong."""
        path = write_key_file(tmp_path / "keys", "1:abc", 0o600)

        with pytest.raises(KeyConfigurationError, match=f"key file {path}"):
            KeyRing.from_file(path)

    def test_write_file_is_private_and_exclusive(self, tmp_path: Path) -> None:
        """write_file creates mode 0600, refuses to overwrite unless asked, and leaves no temp file."""
        path = tmp_path / "folder" / "keys"
        first = KeyRing({1: KEY_ONE})
        second = KeyRing({1: KEY_ONE, 2: KEY_TWO})

        first.write_file(path)
        with pytest.raises(KeyConfigurationError, match="already exists"):
            second.write_file(path)
        assert KeyRing.from_file(path).export() == first.export()
        second.write_file(path, replace=True)

        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert KeyRing.from_file(path).export() == second.export()
        assert sorted(item.name for item in path.parent.iterdir()) == ["keys"]


class TestEnvironment:
    """KeyRing.from_environment and the variables open_secret_store reads."""

    def test_no_variables_gives_none(self) -> None:
        """Without either variable there is no key ring."""
        assert KeyRing.from_environment({}) is None

    def test_inline_variable(self) -> None:
        """PI_SANDBOX_ENCRYPTION_KEY contains the keys themselves."""
        keyring = KeyRing.from_environment({ENCRYPTION_KEY_ENV: f"2:{encode(KEY_TWO)},1:{encode(KEY_ONE)}"})

        assert keyring is not None
        assert keyring.primary_version == 2

    def test_file_variable(self, tmp_path: Path) -> None:
        """PI_SANDBOX_ENCRYPTION_KEY_FILE names a key file."""
        path = write_key_file(tmp_path / "keys", encode(KEY_ONE), 0o600)

        keyring = KeyRing.from_environment({ENCRYPTION_KEY_FILE_ENV: str(path)})

        assert keyring is not None
        assert keyring.export() == f"1:{encode(KEY_ONE)}"

    def test_both_variables_are_rejected(self, tmp_path: Path) -> None:
        """Setting both is ambiguous, so it fails."""
        with pytest.raises(KeyConfigurationError, match="unset one of them"):
            KeyRing.from_environment(
                {ENCRYPTION_KEY_ENV: encode(KEY_ONE), ENCRYPTION_KEY_FILE_ENV: str(tmp_path / "k")}
            )

    def test_open_uses_database_url_and_key_variables(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no arguments, open_secret_store reads PI_SANDBOX_DATABASE_URL and the key variable."""
        database = tmp_path / "from-env.db"
        monkeypatch.setenv(DATABASE_URL_ENV, f"sqlite:///{database}")
        monkeypatch.setenv(ENCRYPTION_KEY_ENV, encode(KEY_ONE))

        with open_secret_store() as store:
            store.put("token", "value", env_var="TOKEN")
            shown = repr(store)

        assert database.exists()
        assert "from-env.db" in shown
        assert not default_key_file().exists()
        assert not default_database_path().exists()

    def test_keyring_argument_wins_over_variable(
        self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An explicit key ring is used even when the variable is set."""
        monkeypatch.setenv(ENCRYPTION_KEY_ENV, encode(KEY_ONE))
        explicit = KeyRing({7: KEY_TWO})

        with open_secret_store(sqlite_url, keyring=explicit) as store:
            record = store.put("token", "value", env_var="TOKEN")

        assert record.key_version == 7

    def test_explicit_url_without_key_is_refused(self, sqlite_url: str) -> None:
        """Only the embedded database may generate a key; other URLs need one configured."""
        with pytest.raises(KeyConfigurationError) as caught:
            open_secret_store(sqlite_url)

        assert ENCRYPTION_KEY_ENV in str(caught.value)
        assert ENCRYPTION_KEY_FILE_ENV in str(caught.value)
        assert not default_key_file().exists()


class TestEmbeddedDefault:
    """The embedded SQLite store generates its key file once, and never over existing rows."""

    def test_first_open_generates_private_key_file(self, caplog: pytest.LogCaptureFixture) -> None:
        """An empty embedded store gets a mode 0600 key file and an INFO log naming it."""
        caplog.set_level(logging.INFO, logger="pi_sandbox.store")

        with open_secret_store() as store:
            store.put("token", "value", env_var="TOKEN")
            generated = store.keyring.export()

        key_file = default_key_file()
        assert key_file.exists()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(default_database_path().stat().st_mode) == 0o600
        assert KeyRing.from_file(key_file).export() == generated
        assert any(
            record.levelno == logging.INFO and str(key_file) in record.getMessage()
            for record in caplog.records
        )

    def test_second_open_reuses_key_file(self) -> None:
        """Reopening reads the same key, so stored values decrypt."""
        with open_secret_store() as store:
            store.put("token", "value", env_var="TOKEN")
        key_text = default_key_file().read_text()

        with open_secret_store() as store:
            value = store.get("token").reveal_text()

        assert value == "value"
        assert default_key_file().read_text() == key_text

    def test_rows_without_key_file_are_refused(self) -> None:
        """A lost key file with secrets stored fails with instructions and generates nothing."""
        with open_secret_store() as store:
            store.put("token", "value", env_var="TOKEN")
        default_key_file().unlink()

        with pytest.raises(KeyConfigurationError) as caught:
            open_secret_store()

        message = str(caught.value)
        assert "holds 1 secrets" in message
        assert str(default_key_file()) in message
        assert "restore the key file" in message
        assert ENCRYPTION_KEY_ENV in message
        assert not default_key_file().exists()

    def test_unsafe_default_key_file_is_refused(self) -> None:
        """The generated file's permissions are checked on every open."""
        with open_secret_store():
            pass
        default_key_file().chmod(0o644)

        with pytest.raises(KeyConfigurationError, match=f"chmod 600 {default_key_file()}"):
            open_secret_store()

    def test_concurrent_first_opens_agree_on_one_key(self) -> None:
        """Processes opening a new embedded store at once all end up with the same key."""
        context = multiprocessing.get_context("spawn")

        with context.Pool(processes=4) as pool:
            exported = pool.starmap(open_embedded_store, [()] * 8)

        assert len(set(exported)) == 1
        assert KeyRing.from_file(default_key_file()).export() == exported[0]
        assert [item.name for item in default_key_file().parent.iterdir()] == ["secrets.key"]


class TestMissingKeys:
    """Secrets whose key version is not configured fail clearly, and only where they must."""

    def test_missing_version_fails_reads_not_list(
        self, store_url: str, keyring: KeyRing, caplog: pytest.LogCaptureFixture
    ) -> None:
        """get names the secret and version; list works; material names every failure."""
        with SqlSecretStore(store_url, keyring) as store:
            store.put("anthropic", "1", env_var="ANTHROPIC_API_KEY")
            store.put("github", "2", env_var="GITHUB_TOKEN")
        only_version_two = KeyRing({2: KEY_TWO})
        caplog.set_level(logging.WARNING, logger="pi_sandbox.store")

        with SqlSecretStore(store_url, only_version_two) as store:
            records = store.list()
            with pytest.raises(DecryptionError) as get_error:
                store.get("anthropic")
            with pytest.raises(DecryptionError) as material_error:
                store.material()
            new_record = store.put("openai", "3", env_var="OPENAI_API_KEY")
            value = store.get("openai").reveal_text()

        assert [record.key_version for record in records] == [1, 1]
        assert "'anthropic'" in str(get_error.value)
        assert "key version 1" in str(get_error.value)
        assert get_error.value.names == ("anthropic",)
        assert material_error.value.names == ("anthropic", "github")
        assert "'github'" in str(material_error.value)
        assert "no secrets were returned" in str(material_error.value)
        assert new_record.key_version == 2
        assert value == "3"
        assert any("key versions [1]" in record.getMessage() for record in caplog.records)

    def test_wrong_key_with_same_version_fails_authentication(self, store_url: str, keyring: KeyRing) -> None:
        """A different key under the same version number is detected, not silently used."""
        with SqlSecretStore(store_url, keyring) as store:
            store.put("token", "value", env_var="TOKEN")

        with (
            SqlSecretStore(store_url, KeyRing({1: KEY_TWO})) as store,
            pytest.raises(DecryptionError, match="failed authentication with key version 1"),
        ):
            store.get("token")

    def test_material_filter_avoids_undecryptable_secret(
        self, store: SqlSecretStore, raw_engine: Engine
    ) -> None:
        """Asking only for decryptable secrets still works when another one is broken."""
        store.put("good", "1", env_var="GOOD")
        store.put("broken", "2", env_var="BROKEN")
        with raw_engine.begin() as connection:
            connection.exec_driver_sql("UPDATE pi_sandbox_secrets SET key_version = 9 WHERE name = 'broken'")

        material = store.material(names=["good"])

        assert list(material) == ["GOOD"]


class TestDatabaseFileMode:
    def test_sqlite_file_named_by_url_is_private(self, tmp_path: Path) -> None:
        """A SQLite file that open_secret_store creates from a URL is readable by its owner only."""
        database = tmp_path / "named.db"

        with open_secret_store(f"sqlite:///{database}", KeyRing.generate()):
            pass

        assert database.stat().st_mode & 0o777 == 0o600
