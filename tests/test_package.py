"""The wheel carries what runs in production, and nothing of the demo, the
sample data or the local servers (devkit/)."""
import subprocess
import sys
import zipfile

from common import REPO


def test_the_wheel_holds_the_product_and_no_dev_kit(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path), REPO], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    code = {name for name in names if ".dist-info/" not in name}

    assert {"workflows/luigi.cfg", "workflows/pipeline/steps.py", "workflows/sources/s3.py",
            "targets/redis_marker.py"} <= code
    assert {name.split("/")[0] for name in code} == {"workflows", "targets"}
    for name in code:
        assert not any(part in name for part in ("demo", "sample", "local_servers", "devkit", "bench", "tests")), name


def test_the_marker_targets_stand_alone():
    """targets/ knows Redis and ClickHouse, not the product: importing it loads nothing of workflows."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, targets; print(sorted({m.split('.')[0] for m in"
                             " sys.modules if m.startswith(('workflows', 'devkit'))}))"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
