"""Which services of a graph run on a node (`--component`), and the module dynix writes."""

from __future__ import annotations

import pytest

from dynix.errors import DynixError
from dynix.serve import node, render


def test_no_names_is_the_whole_graph():
    here = node.select("disagg_router", ())
    assert here.whole
    assert here.services == render.GRAPH_SERVICES["disagg_router"]
    assert here.target == "dynix_node_graph:Frontend"


def test_names_are_put_in_the_order_requests_flow_and_matched_without_case():
    here = node.select("disagg_router", ["vllmworker", "Frontend", "ROUTER", "Processor"])
    assert here.services == ("Frontend", "Processor", "Router", "VllmWorker")
    assert not here.whole
    assert here.frontend
    assert node.select("disagg", ["PrefillWorker", "PrefillWorker"]).services == ("PrefillWorker",)


def test_an_unknown_service_names_the_graphs_services():
    with pytest.raises(DynixError) as exc:
        node.select("agg", ["PrefillWorker"])
    assert str(exc.value) == (
        "--component PrefillWorker: graph agg has no such service "
        "(its services: Frontend, Processor, VllmWorker)"
    )


def test_services_that_do_not_follow_each_other_are_refused_naming_the_gap():
    with pytest.raises(DynixError) as exc:
        node.select("disagg_router", ["Frontend", "VllmWorker"])
    assert "Processor, Router would sit between them" in str(exc.value)


def test_the_whole_graph_imports_the_examples_own_graph_module():
    text = node.module_text(node.select("disagg", ()))
    assert "from graphs.disagg import Frontend, PrefillWorker, Processor, VllmWorker" in text
    assert ".link(" not in text
    compile(text, "dynix_node_graph.py", "exec")


def test_a_chain_is_linked_in_flow_order_from_the_components():
    text = node.module_text(node.select("disagg_router", ["Frontend", "Processor", "Router",
                                                          "VllmWorker"]))  # fmt: skip
    assert "from components.kv_router import Router" in text
    assert "from components.worker import VllmWorker" in text
    assert "Frontend.link(Processor).link(Router).link(VllmWorker)\n" in text
    assert "PrefillWorker" not in text
    compile(text, "dynix_node_graph.py", "exec")


def test_one_service_alone_drops_its_dependencies():
    text = node.module_text(node.select("disagg", ["VllmWorker"]))
    assert "VllmWorker.remove_unused_edges(used_edges=set())" in text
    assert "for _service in (VllmWorker,):" in text


def test_the_echo_services_come_from_dynix_s_echo_components():
    text = node.module_text(node.select("echo", ["EchoPrefillWorker"]))
    assert "from components.echo import EchoPrefillWorker\n" in text


def test_watcher_names_follow_dynamo_s_naming():
    assert node.select("echo", ()).watcher("EchoWorker") == "dynix_EchoWorker"
    assert node.select("disagg", ["Frontend", "Processor"]).watcher("Processor") == (
        "dynamo_Processor"
    )
    assert node.select("disagg", ["PrefillWorker"]).watcher("PrefillWorker") == "_PrefillWorker"


def test_only_keeps_this_nodes_sections():
    rendered = {"Common": {}, "Frontend": {}, "VllmWorker": {}, "PrefillWorker": {}}
    here = node.select("disagg", ["PrefillWorker"])
    assert list(node.only(rendered, here)) == ["Common", "PrefillWorker"]


def test_lease_records_are_read_and_bad_ones_skipped(tmp_path):
    (tmp_path / "10.json").write_text('{"pid": 10, "service": "PrefillWorker", "lease": 255}')
    (tmp_path / "11.json").write_text("{not json")
    (tmp_path / "12.json.tmp").write_text('{"pid": 12, "service": "X", "lease": 1}')
    assert node.leases(tmp_path) == [node.Lease(10, "PrefillWorker", 255)]
    node.forget(tmp_path, node.Lease(10, "PrefillWorker", 255))
    node.forget(tmp_path, node.Lease(10, "PrefillWorker", 255))  # twice: no error
    assert node.leases(tmp_path) == []
    assert node.leases(tmp_path / "missing") == []
