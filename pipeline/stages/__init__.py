"""One module per DVC stage, each with `run(params[, modality])`: read the inputs the stage
declares in dvc.yaml, call the pure functions, write the outputs atomically.

The CLI imports a stage module by name only when that stage runs, so each stage loads only
what it uses, and dvc.yaml lists exactly each stage module's import closure inside the
package (tests/unit/test_dvc_deps.py checks it).
"""
