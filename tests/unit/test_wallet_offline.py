"""`meshchain wallet` without a node: where the passphrase comes from, importing, listing,
and one-line errors for what can be checked locally."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from meshchain.cli.main import cli
from meshchain.config import write_key
from meshchain.core.crypto.address import address_from_public_key, encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import WrongPassphraseError
from meshchain.wallet.keystore import Keystore


def wallet(wallet_dir: Path, *args: str, stdin: str | None = None, **env: str) -> Result:
    """`meshchain wallet ARGS --wallet-dir DIR`, with no passphrase in the environment
    unless given."""
    runner = CliRunner(env={"MESHCHAIN_PASSPHRASE": None, "MESHCHAIN_WALLET_DIR": None, **env})
    return runner.invoke(cli, ["wallet", *args, "--wallet-dir", str(wallet_dir)], input=stdin)


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_new_prompts_twice_and_the_key_opens_with_that_passphrase(tmp_path: Path) -> None:
    result = wallet(tmp_path, "new", "--name", "alice", stdin="pw one\npw one\n")
    assert result.exit_code == 0, result.output
    assert "pw one" not in result.output  # hidden input
    store = Keystore(tmp_path)
    entry = store.find("alice")
    assert f"address: {entry.address}" in result.stdout
    assert stat.S_IMODE(entry.path.stat().st_mode) == 0o600
    store.unlock(entry, "pw one")
    with pytest.raises(WrongPassphraseError):
        store.unlock(entry, "pw two")


def test_a_mismatched_confirmation_stores_nothing(tmp_path: Path) -> None:
    result = wallet(tmp_path, "new", stdin="one\ntwo\n")
    assert result.exit_code != 0
    assert "do not match" in result.stderr
    assert not list(tmp_path.glob("*.json"))


def test_passphrase_file_wins_over_the_environment_and_only_its_first_line_counts(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "pass"
    secret.write_text("from file\nsecond line\n")
    keys = tmp_path / "keys"
    result = wallet(keys, "new", "--passphrase-file", str(secret), MESHCHAIN_PASSPHRASE="env")
    assert result.exit_code == 0, result.output
    Keystore(keys).unlock(Keystore(keys).find("key-1"), "from file")
    result = wallet(keys, "new", MESHCHAIN_PASSPHRASE="from env")
    assert result.exit_code == 0, result.output
    Keystore(keys).unlock(Keystore(keys).find("key-2"), "from env")
    secret.write_text("\n")
    error = _one_line_error(wallet(keys, "new", "--passphrase-file", str(secret)))
    assert "no passphrase in the file" in error


def test_import_takes_a_devnet_key_file_under_its_stem_once(tmp_path: Path) -> None:
    key = SecretKey.generate()
    key_file = tmp_path / "wallets" / "wallet-3.key"
    write_key(key_file, key)
    keys = tmp_path / "keys"
    result = wallet(keys, "import", str(key_file), MESHCHAIN_PASSPHRASE="pw")
    assert result.exit_code == 0, result.output
    address = encode_address(address_from_public_key(key.public_key))
    assert "name: wallet-3" in result.stdout
    assert Keystore(keys).unlock(Keystore(keys).find(address), "pw").to_bytes() == key.to_bytes()
    again = wallet(keys, "import", str(key_file), "--name", "other", MESHCHAIN_PASSPHRASE="pw")
    assert "in the keystore already, as 'wallet-3'" in _one_line_error(again)
    (tmp_path / "bad.key").write_text("not hex\n")
    bad = wallet(keys, "import", str(tmp_path / "bad.key"), MESHCHAIN_PASSPHRASE="pw")
    assert "bad.key: secret key is not hex" in _one_line_error(bad)


def test_list_shows_names_and_addresses_and_names_a_damaged_file(tmp_path: Path) -> None:
    empty = wallet(tmp_path / "none", "list")
    assert empty.exit_code == 0
    assert "no keys in" in empty.stderr
    made = wallet(tmp_path, "new", "--name", "alice", MESHCHAIN_PASSPHRASE="pw")
    address = made.stdout.split("address: ")[1].split()[0]
    listed = wallet(tmp_path, "list")
    assert listed.stdout == f"alice  {address}\n"
    (tmp_path / "broken.json").write_text(json.dumps({"version": 1}))
    error = _one_line_error(wallet(tmp_path, "list"))
    assert "broken.json: not a keystore file: missing field 'kdf'" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["balance", "mc1qqqqqqqqqqqq"], "bad checksum"),
        (["balance", "MC1QQQ"], "bad checksum"),
        (["balance", "carol"], "no key 'carol'"),
        (["new", "--name", "../up"], "key name '../up'"),
        (["new", "--name", "mc1me"], "looks like an address"),
    ],
)
def test_local_mistakes_are_one_line_errors_before_any_prompt(
    tmp_path: Path, args: list[str], message: str
) -> None:
    assert message in _one_line_error(wallet(tmp_path, *args, stdin=""))
