"""The package structure: no import cycles anywhere in relay/ and worker/.

The layers themselves (which package may import which) are import-linter's contract in
pyproject.toml, checked by `make test` (`lint-imports`); import-linter does not look for cycles
between modules of one layer, so this test does, on the same import graph (grimp's).
"""

from __future__ import annotations

import grimp


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph("relay", "worker")
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert cycles == []
