"""The listener's presentation contexts are copied into each association as deepcopy would copy
them: equal, and none of their parts shared that negotiation changes."""

from __future__ import annotations

import copy

from pynetdicom import AE

from dicom_node.dimse.ae import _QUERY_RETRIEVE, ListenerContexts, Verification


def test_each_association_gets_its_own_equal_copy():
    ae = AE()
    for sop_class in (Verification, *_QUERY_RETRIEVE):
        ae.add_supported_context(sop_class, scu_role=True, scp_role=True)
    contexts = ListenerContexts(ae.supported_contexts)
    copies = copy.deepcopy(contexts)
    expected = copy.deepcopy(list(contexts))
    assert [vars(context) for context in copies] == [vars(context) for context in expected]
    for original, copied in zip(contexts, copies, strict=True):
        assert copied is not original
        copied.transfer_syntax.append("1.2.840.10008.1.2.4.50")
        copied.context_id = 9
        assert "1.2.840.10008.1.2.4.50" not in original.transfer_syntax
        assert original.context_id is None
