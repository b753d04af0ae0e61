"""Random transaction sequences keep the ledger's invariants, and undo is exact."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshchain.chainkit import ChainKit
from meshchain.core.chain.genesis import chain_id, genesis_ledger
from meshchain.core.chain.ledger import BlockEconomics, BlockUndo, Ledger
from meshchain.core.chain.tx import reverified_from_chain
from meshchain.errors import ValidationError

KIT = ChainKit(seed=21, accounts=4)
CHAIN_ID = chain_id(KIT.genesis)
FUNDS = KIT.genesis.allocations[0].amount
STRANGERS = [bytes([n]) * 20 for n in range(1, 4)]  # addresses no genesis key owns

transfer = st.tuples(
    st.integers(0, KIT.accounts - 1),  # sender
    st.integers(0, KIT.accounts + len(STRANGERS) - 1),  # recipient: a key or a stranger
    st.one_of(st.integers(0, 1_000), st.integers(0, 2 * FUNDS)),  # amount, sometimes too much
    st.integers(0, 50),  # fee
    st.integers(-1, 1),  # nonce offset from the right one: -1 and +1 are wrong
)
blocks = st.lists(
    st.tuples(
        st.lists(transfer, max_size=6),
        st.integers(0, 100),  # reward
        st.integers(0, 10_000),  # fee burn, basis points
        st.integers(0, KIT.accounts + len(STRANGERS) - 1),  # beneficiary
    ),
    max_size=8,
)


Transfer = tuple[int, int, int, int, int]
Plan = tuple[list[Transfer], int, int, int]


def address(index: int) -> bytes:
    return KIT.address(index) if index < KIT.accounts else STRANGERS[index - KIT.accounts]


def snapshot(ledger: Ledger) -> tuple[object, ...]:
    return ledger.state_root(), tuple(ledger.records()), ledger.minted, ledger.burnt


@settings(max_examples=150, deadline=None)
@given(blocks)
def test_invariants_hold_and_undo_is_the_identity(plan: list[Plan]) -> None:
    ledger = genesis_ledger(KIT.genesis)
    history: list[tuple[tuple[object, ...], BlockUndo]] = []
    for txs, reward, burn, beneficiary in plan:
        before = snapshot(ledger)
        vtxs = []
        nonces: dict[int, int] = {}
        for sender, recipient, amount, fee, offset in txs:
            nonce = nonces.get(sender, ledger.account_nonce(KIT.address(sender)))
            tx = KIT.transfer(
                CHAIN_ID, sender, address(recipient), amount, fee, max(0, nonce + offset)
            )
            vtxs.append(reverified_from_chain(tx))
            nonces[sender] = nonce + 1
        try:
            undo = ledger.apply_block(vtxs, BlockEconomics(address(beneficiary), reward, burn))
        except ValidationError:
            assert snapshot(ledger) == before  # a rejected block leaves no trace
            continue
        history.append((before, undo))
        assert ledger.total_balance() == ledger.expected_supply()
        assert ledger.expected_supply() == ledger.allocated + ledger.minted - ledger.burnt
        assert all(record.balance >= 0 for record in ledger.records())
    for before, undo in reversed(history):
        ledger.undo_block(undo)
        assert snapshot(ledger) == before
    assert snapshot(ledger) == snapshot(genesis_ledger(KIT.genesis))
