from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from router_service.config import Prices
from router_service.cost import PriceTable, Usage, usd_to_micro

# Claude-style prices: $3 input, $0.30 cache read, $3.75 cache write, $15 output per Mtok.
CLAUDE = PriceTable.from_config(
    Prices(
        input=Decimal("3"),
        cached_input=Decimal("0.30"),
        cache_write=Decimal("3.75"),
        output=Decimal("15"),
    )
)


def test_prices_become_micro_dollars_per_million_tokens() -> None:
    assert PriceTable(3_000_000, 300_000, 3_750_000, 15_000_000) == CLAUDE
    assert usd_to_micro(Decimal("0.95")) == 950_000


def test_cost_splits_input_by_cache_status() -> None:
    # 10,000 input of which 6,000 read from cache and 1,000 written; 500 output.
    usage = Usage(
        input_tokens=10_000, cached_input_tokens=6_000, cache_write_tokens=1_000, output_tokens=500
    )
    # 3,000 x $3 + 6,000 x $0.30 + 1,000 x $3.75 + 500 x $15, per million tokens:
    # 0.009 + 0.0018 + 0.00375 + 0.0075 = $0.02205
    assert CLAUDE.cost_micro_usd(usage) == 22_050


def test_cost_rounds_half_up_to_a_micro_dollar() -> None:
    glm = PriceTable(950_000, 190_000, 950_000, 1_400_000)
    assert glm.cost_micro_usd(Usage(input_tokens=1)) == 1  # 0.95 micro-dollars
    assert glm.cost_micro_usd(Usage(input_tokens=2)) == 2  # 1.9
    assert glm.cost_micro_usd(Usage()) == 0


def test_worst_case_takes_the_dearer_input_price_and_rounds_up() -> None:
    assert CLAUDE.worst_case_micro_usd(1_000, 100) == 3_750 + 1_500
    assert PriceTable(1, 1, 1, 1).worst_case_micro_usd(1, 0) == 1


usages = st.builds(
    lambda cached, written, uncached, out: Usage(
        input_tokens=cached + written + uncached,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=out,
    ),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
)
prices = st.builds(PriceTable, *(st.integers(0, 10**8) for _ in range(4)))


@given(usages, prices)
def test_cost_never_exceeds_the_worst_case(usage: Usage, table: PriceTable) -> None:
    assert table.cost_micro_usd(usage) <= table.worst_case_micro_usd(
        usage.input_tokens, usage.output_tokens
    )


@given(usages, usages, prices)
def test_cost_is_additive_within_rounding(a: Usage, b: Usage, table: PriceTable) -> None:
    assert abs(table.cost_micro_usd(a + b) - table.cost_micro_usd(a) - table.cost_micro_usd(b)) <= 1


@given(usages, prices)
def test_cost_matches_exact_decimal_arithmetic(usage: Usage, table: PriceTable) -> None:
    exact = (
        Decimal(usage.uncached_input_tokens * table.input)
        + Decimal(usage.cached_input_tokens * table.cached_input)
        + Decimal(usage.cache_write_tokens * table.cache_write)
        + Decimal(usage.output_tokens * table.output)
    ) / Decimal(10**6)
    assert abs(Decimal(table.cost_micro_usd(usage)) - exact) <= Decimal("0.5")
