"""Encoded features held as Arrow read as the list of dicts they were built from, and fingerprint the same."""

import math

from compress.core.hashing import data_hash
from compress.data.batching import EncodedSplit
from compress.data.rows import ArrowRows, concat_rows, map_rows


def rows(n: int, float_labels: bool = False) -> list[dict]:
    return [{"input_ids": [101, 2000 + i, 102][: 2 + i % 2], "attention_mask": [1, 1, 1][: 2 + i % 2],
             "labels": (math.nan if i % 3 == 0 else i / 7) if float_labels else i % 3} for i in range(n)]


def test_arrow_rows_read_as_the_list_they_were_built_from():
    plain = rows(10_000)
    held = ArrowRows.from_chunks([plain[:4096], plain[4096:]])
    assert held == plain and held[-1] == plain[-1] and list(held[5:9]) == plain[5:9]
    assert held.take([3, 0, 3]) == [plain[3], plain[0], plain[3]]
    assert held.lengths() == [len(r["input_ids"]) for r in plain]
    assert list(concat_rows(plain[:2], held[:2])) == plain[:2] + plain[:2]
    assert list(map_rows(held, lambda r: r | {"labels": -100}))[0]["labels"] == -100
    split = EncodedSplit(held)
    assert split.lengths == EncodedSplit(plain).lengths and split.labels == EncodedSplit(plain).labels
    assert split.head(3).features == plain[:3]


def test_arrow_rows_fingerprint_as_their_python_rows_do():
    # The digest is the JSON text of the rows, so runs made before rows were held as Arrow keep their stage hashes.
    plain, scores = rows(9_000), rows(50, float_labels=True)
    held = ArrowRows.from_chunks([plain[:4096], plain[4096:]])
    assert data_hash([held, held[:10], held[10:20]], ["a", "b"]) == data_hash([plain, plain[:10], plain[10:20]],
                                                                              ["a", "b"])
    assert data_hash(ArrowRows.from_chunks([scores])) == data_hash(scores)  # NaN scores too
    assert data_hash(ArrowRows.from_chunks([])) == data_hash([])
