"""The Python API the README shows: `from compress import load_config, run`, on a run built once per session."""

import subprocess
import sys

import pytest

import compress
from compress.core.config import dump_config
from tests.test_pipeline import tiny_config


def test_the_readme_example_resumes_a_run_from_python(run_folder_copy, tiny_bert_dir, tiny_csv):
    copied = run_folder_copy("tiny", lambda root: tiny_config(root, tiny_bert_dir, tiny_csv))
    path = copied.root / "tiny.yaml"
    path.write_text(dump_config(copied.cfg))

    import transformers

    cfg = compress.load_config(path)
    assert cfg == copied.cfg
    transformers.logging.set_verbosity_info()  # a notebook's own level: the run quiets the library while it runs
    result = compress.run(str(path), only="report")  # a path, and --only's stage; nothing else re-runs
    assert transformers.logging.get_verbosity() == transformers.logging.INFO  # ... and puts it back
    transformers.logging.set_verbosity_warning()
    assert result.ran == [] and result.report["rows"] == copied.result.report["rows"]
    rows = {row["model"]: (row["metric"], row["speedup"]) for row in result.report["rows"]}
    assert set(rows) == {"teacher", "half", "half-baseline"} and rows["teacher"][1] == 1.0
    with pytest.raises(compress.UserError, match="config file not found"):
        compress.run(copied.root / "missing.yaml")


def test_export_is_a_function_too(run_folder_copy, tiny_bert_dir, tiny_csv, tmp_path):
    copied = run_folder_copy("tiny", lambda root: tiny_config(root, tiny_bert_dir, tiny_csv))
    files = compress.export(copied.cfg.run_dir / "teacher", tmp_path / "teacher-onnx", optimize=False)
    assert [f["file"] for f in files] == ["model.onnx"] and files[0]["parity_max_abs_diff"] < 1e-4


def test_importing_the_package_loads_no_model_library():
    code = "import sys, compress; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
