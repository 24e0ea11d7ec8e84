"""SecretValue and SecretMaterial keep values out of every text form."""

from __future__ import annotations

import logging
import pickle

import pytest

from pi_sandbox import InvalidSecretError, SecretMaterial, SecretValue
from pi_sandbox._secrets import redact
from pi_sandbox.testing import contract_canary


class TestSecretValue:
    def test_text_forms_hide_value(self) -> None:
        """repr, str, format and logging show that a value is set, never the value."""
        canary = contract_canary()
        value = SecretValue(canary)

        texts = [repr(value), str(value), f"{value}", f"{value!r}", repr([value]), repr({"k": value})]

        for text in texts:
            assert canary not in text
        assert "redacted" in repr(value)

    def test_log_record_hides_value(self, caplog: pytest.LogCaptureFixture) -> None:
        """A SecretValue passed to a logger as an argument stays hidden."""
        canary = contract_canary()

        with caplog.at_level(logging.DEBUG):
            logging.getLogger("pi_sandbox.test").debug(
                "value is %s %r", SecretValue(canary), SecretValue(canary)
            )

        assert canary not in caplog.text

    def test_reveal_is_byte_exact(self) -> None:
        """reveal returns the exact bytes, text is stored as UTF-8."""
        assert SecretValue("ключ\n ").reveal() == "ключ\n ".encode()
        assert SecretValue(b"\xff\x01").reveal() == b"\xff\x01"

    def test_pickle_refused(self) -> None:
        """Pickling would write the value to wherever the pickle goes, so it is refused."""
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(SecretValue("x"))


class TestSecretMaterial:
    def test_repr_lists_names_only(self) -> None:
        """The material's repr names the variables, never the values."""
        canary = contract_canary()
        material = SecretMaterial({"ANTHROPIC_API_KEY": canary})

        assert "ANTHROPIC_API_KEY" in repr(material)
        assert canary not in repr(material)
        assert canary not in str(dict(material))

    @pytest.mark.parametrize(
        "name", ["PATH", "path", "LD_PRELOAD", "ld_library_path", "NODE_OPTIONS", "BASH_ENV", "1X", "A-B", ""]
    )
    def test_reserved_or_invalid_names_rejected(self, name: str) -> None:
        """Names that are not identifiers or that steer how programs run are rejected."""
        with pytest.raises(InvalidSecretError):
            SecretMaterial({name: "value"})

    @pytest.mark.parametrize(
        ("value", "problem"), [("", "empty"), ("a\x00b", "NUL"), ("x" * 600_000, "maximum")]
    )
    def test_bad_values_rejected_without_echo(self, value: str, problem: str) -> None:
        """Empty, NUL-carrying and oversized values are rejected, and the error does not quote them."""
        with pytest.raises(InvalidSecretError) as raised:
            SecretMaterial({"SOME_KEY": value})

        assert problem in str(raised.value)
        if value:
            assert value[:20] not in str(raised.value)

    def test_redact_replaces_every_value(self) -> None:
        """redact scrubs each secret's text from a log line."""
        first, second = contract_canary(), contract_canary()
        material = SecretMaterial({"A_KEY": first, "B_KEY": second})

        text = redact(f"start {first} middle {second} end", material)

        assert first not in text
        assert second not in text
        assert text == "start <redacted> middle <redacted> end"
