"""The evidence index's shared image entries (index schema 2, issue 19) on SQLite and on a real PostgreSQL:
the same tests as tests/unit/evidence/test_index_images.py, against a store of each backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scanner.store import open_store, upgrade
from tests.unit.evidence.test_index_images import (  # noqa: F401 - collected here, with this module's store
    test_a_hostile_index_is_a_store_error_for_the_pack_and_the_prune,
    test_a_name_pointing_at_other_entries_is_never_trusted,
    test_a_scan_name_planted_ahead_at_another_scans_index_is_a_store_error,
    test_a_scan_name_planted_ahead_is_claimed_by_the_scans_own_write,
    test_a_scan_that_judged_the_same_images_stores_no_entries_and_reads_the_same,
    test_a_watch_name_planted_at_another_scans_index_is_a_store_error,
    test_an_index_naming_its_entries_in_no_or_two_ways_is_malformed,
    test_an_index_of_schema_1_still_loads,
    test_damaged_entries_are_a_store_error_never_a_wrong_list,
    test_entries_of_other_gzip_bytes_pruned_before_the_write_are_named_as_stored_afresh,
    test_entries_pruned_between_the_look_up_and_the_write_are_stored_afresh,
    test_hostile_entries_are_a_store_error_for_the_pack_and_the_prune,
    test_planted_entries_of_the_named_text_are_a_store_error_not_a_crash,
    test_prune_keeps_the_entries_a_kept_scan_names_and_drops_the_rest,
    test_rows_planted_ahead_under_the_names_a_scan_writes_are_repaired_by_its_write,
)


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    upgrade(db_url)
    with open_store(db_url) as s:
        yield s
