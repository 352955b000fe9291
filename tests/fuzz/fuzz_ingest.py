"""Coverage-guided fuzz target (atheris/libFuzzer) for what a peer's bytes reach first on ingest.

The first byte of an input picks the target, the rest is the peer's bytes:
- 0: ``PduStreamGuard`` (PDU and PDV headers, limits, the A-ASSOCIATE-RQ's AE titles). Besides
  never raising, the verdict must not depend on how the stream is cut into reads: the bytes are
  fed whole and in pieces whose sizes the input also chooses, and both verdicts must agree.
- 1: ``codec.c_store_rq_command`` (the fast path's C-STORE-RQ command decoding): a dict or None.
- 2: ``fast._PDataView`` (P-DATA-TF PDVs as views): its PDVs, or ValueError.
- 3: ``identify`` (the structure walk and the identifying attributes) on every transfer syntax
  the node accepts (the second byte picks it): an identity, or ``InvalidInstance``.
Anything else that escapes is a crash libFuzzer reports, with the input that caused it.

Run: ``make fuzz`` (longer, corpus kept in var/fuzz-corpus), or
``python tests/fuzz/fuzz_ingest.py -max_total_time=60 WORK_DIR tests/fuzz/corpus``;
``tests/fuzz/test_fuzz.py`` runs it for a bounded time in the test suite.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["onconode"]):
    from onconode.dicom_node.acceptor.codec import c_store_rq_command
    from onconode.dicom_node.acceptor.fast import _PDataView
    from onconode.dicom_node.acceptor.pdu_guard import Limits, PduStreamGuard, Refusal
    from onconode.dicom_node.identify import InvalidInstance, identify
    from onconode.dicom_node.policy import Rejection
    from onconode.dicom_node.sop_classes import TRANSFER_SYNTAXES

LIMITS = Limits(max_pdu_bytes=1 << 16, max_dataset_bytes=1 << 20)
REJECT_SOME = Rejection(0x01, 0x01, 0x07, "called AE title not ours")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _verdict(chunks: list[bytes]) -> tuple[Refusal | None, bool, int]:
    calls = []

    def admit(called: str, calling: str) -> Rejection | None:
        calls.append((called, calling))
        return REJECT_SOME if called.startswith("X") else None

    guard = PduStreamGuard(LIMITS, admit)
    refusal = None
    for chunk in chunks:
        refusal = guard.feed(chunk)
        if refusal is not None:
            break
    assert len(calls) <= 1, "admission asked twice"
    return refusal, guard.admitted, guard.pdus_started if refusal is None else 0


def _guard(fdp: atheris.FuzzedDataProvider) -> None:
    cuts = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    stream = fdp.ConsumeBytes(atheris.ALL_REMAINING)
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(stream[pos:pos + cut])
        pos += cut
    pieces.append(stream[pos:])
    whole = _verdict([stream])
    split = _verdict(pieces)
    assert whole == split, f"verdict depends on the reads: {whole} vs {split}"


def _identify(fdp: atheris.FuzzedDataProvider) -> None:
    syntax = TRANSFER_SYNTAXES[fdp.ConsumeIntInRange(0, len(TRANSFER_SYNTAXES) - 1)]
    data_set = fdp.ConsumeBytes(atheris.ALL_REMAINING)
    try:
        identify(data_set, str(syntax), CT_IMAGE, "1.2.3.4", LIMITS.max_dataset_bytes)
    except InvalidInstance:
        pass


def _pdata(payload: bytes) -> None:
    try:
        _PDataView(bytearray(b"\x04\x00" + len(payload).to_bytes(4, "big") + payload)).to_primitive()
    except ValueError:
        pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, rest = data[0] % 4, data[1:]
    if target == 0:
        _guard(atheris.FuzzedDataProvider(rest))
    elif target == 1:
        assert c_store_rq_command(b"\x03" + rest) is None or isinstance(c_store_rq_command(b"\x03" + rest), dict)
    elif target == 2:
        _pdata(rest)
    else:
        _identify(atheris.FuzzedDataProvider(rest))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
