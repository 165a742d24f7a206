"""qpass.save / qpass.load: every mode reloads bit for bit without the float model, a save is never
left half-written, and each broken folder is refused with the file and the fix named."""

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mamba_qpass as qpass
from mamba_qpass import serialize
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.serialize import METADATA_FILE, TENSORS_FILE, SavedModelError
from mamba_qpass.snapshot import graph_to_text
from models import random_mamba
from test_w8a8 import token_batches

CKPT = Path(__file__).resolve().parent.parent / "checkpoints" / "gutenberg-mamba-25m"


@pytest.fixture(scope="module")
def model():
    return random_mamba(initializer_range=0.02)


@pytest.fixture(scope="module")
def calibrated(model):
    return qpass.calibrate(model, token_batches(97, count=2), progress=False)


@pytest.fixture(scope="module")
def built(model, calibrated):
    """Every mode's model as qpass.apply returns it, the quantised ones from one calibration."""
    return {
        mode: qpass.apply(model, mode) if mode == "fp"
        else QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, mode), model.config, mode)
        for mode in qpass.mode_names()
    }


@pytest.fixture(scope="module")
def inputs():
    return token_batches(97, count=1, batch=2, length=19, seed=7)[0]


@pytest.fixture(scope="module")
def saved_w8a8(built, tmp_path_factory) -> Path:
    return qpass.save(built["w8a8"], tmp_path_factory.mktemp("saved") / "w8a8")


@pytest.fixture
def copy_of_saved(saved_w8a8, tmp_path) -> Path:
    """A copy each refusal test may break."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (METADATA_FILE, TENSORS_FILE):
        (folder / name).write_bytes((saved_w8a8 / name).read_bytes())
    return folder


def _edit_metadata(folder: Path, **changes) -> None:
    path = folder / METADATA_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("mode", qpass.mode_names())
def test_reload_without_the_float_model_is_bit_identical(built, inputs, tmp_path, mode):
    saved = built[mode]
    reloaded = qpass.load(qpass.save(saved, tmp_path / mode))
    assert isinstance(reloaded, QuantizedMambaForCausalLM) and reloaded.mode == mode
    assert graph_to_text(reloaded.gm) == graph_to_text(saved.gm)
    assert torch.equal(reloaded(inputs).logits, saved(inputs).logits)


def test_from_pretrained_loads_what_save_pretrained_wrote(built, inputs, tmp_path):
    built["float_sim"].save_pretrained(tmp_path / "m")
    reloaded = QuantizedMambaForCausalLM.from_pretrained(tmp_path / "m")
    assert reloaded.mode == "float_sim"
    assert torch.equal(reloaded(inputs).logits, built["float_sim"](inputs).logits)


def test_saved_w8a8_holds_int8_weights_and_no_float_linear_weight(saved_w8a8):
    tensors = load_file(saved_w8a8 / TENSORS_FILE)
    assert tensors["backbone.layers.0.mixer.in_proj.weight_int8"].dtype == torch.int8
    assert "backbone.layers.0.mixer.in_proj.weight" not in tensors


def test_calibrated_graph_reloads_and_builds_the_same_modes(calibrated, inputs, tmp_path):
    reloaded = qpass.load(qpass.save(calibrated, tmp_path / "calibrated"))
    assert reloaded.meta["calibration"] == calibrated.meta["calibration"]
    for mode in ("w8a8", "fp32_conv"):
        assert torch.equal(qpass.apply_mode(reloaded, mode)(inputs), qpass.apply_mode(calibrated, mode)(inputs))


def test_float16_model_reloads_bit_identical(inputs, tmp_path):
    model = random_mamba(initializer_range=0.02, num_hidden_layers=1).half()
    saved = qpass.apply(model, "w8a8", calibration=token_batches(97, count=1), progress=False)
    reloaded = qpass.load(qpass.save(saved, tmp_path / "fp16"), model=model)
    assert reloaded.dtype == torch.float16
    assert torch.equal(reloaded(inputs).logits, saved(inputs).logits)


def test_metadata_records_the_recipe_and_its_provenance(model, saved_w8a8):
    record = json.loads((saved_w8a8 / METADATA_FILE).read_text())
    assert (record["mode"], record["kind"], record["format_version"]) == ("w8a8", "model", serialize.FORMAT_VERSION)
    assert record["quant_config"]["scan_out_dtype"] == "float16"
    assert record["source"]["config"]["hidden_size"] == model.config.hidden_size
    assert record["calibration"]["sequences"] == 2 * 4 and record["calibration"]["seq_len"] == 32


def test_save_works_from_a_checkout_that_is_not_installed(built, tmp_path, monkeypatch):
    """Run from source (PYTHONPATH, as scripts/gpu_tests.sh does) there is no package metadata: the version
    a save records comes from mamba_qpass.version, the one place pyproject.toml reads it from too."""
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    folder = qpass.save(built["w8a8"], tmp_path / "from_source")
    assert json.loads((folder / METADATA_FILE).read_text())["project_version"] == qpass.__version__


def test_tokenizer_is_saved_beside_the_model(built, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(CKPT)
    folder = qpass.save(built["w8a8"], tmp_path / "with_tokenizer", tokenizer=tokenizer)
    text = "the old man sat by the fire"
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_the_source_float_model_is_accepted_and_another_refused(model, saved_w8a8):
    assert qpass.load(saved_w8a8, model=model).mode == "w8a8"
    with pytest.raises(SavedModelError, match="fingerprint") as err:
        qpass.load(saved_w8a8, model=random_mamba(seed=1, initializer_range=0.02))
    assert str(saved_w8a8 / METADATA_FILE) in str(err.value)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(SavedModelError, match="does not exist"):
        qpass.load(tmp_path / "nowhere")


@pytest.mark.parametrize("name", [METADATA_FILE, TENSORS_FILE])
def test_missing_file_is_refused(copy_of_saved, name):
    (copy_of_saved / name).unlink()
    with pytest.raises(SavedModelError, match=f"{re.escape(str(copy_of_saved / name))} is missing.*save the model again"):
        qpass.load(copy_of_saved)


@pytest.mark.parametrize("name, says", [(METADATA_FILE, "truncated or not JSON"), (TENSORS_FILE, "truncated")])
def test_truncated_file_is_refused(copy_of_saved, name, says):
    path = copy_of_saved / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SavedModelError, match=says) as err:
        qpass.load(copy_of_saved)
    assert str(path) in str(err.value)


def test_corrupted_tensors_are_refused(copy_of_saved):
    path = copy_of_saved / TENSORS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SavedModelError, match="sha256"):
        qpass.load(copy_of_saved)


def test_other_format_version_is_refused(copy_of_saved):
    _edit_metadata(copy_of_saved, format_version=serialize.FORMAT_VERSION + 1)
    with pytest.raises(SavedModelError, match=f"format version {serialize.FORMAT_VERSION + 1}.*version that wrote it"):
        qpass.load(copy_of_saved)


def test_unknown_mode_is_refused(copy_of_saved):
    _edit_metadata(copy_of_saved, mode="w4a8")
    with pytest.raises(SavedModelError, match="mode 'w4a8', which mamba-qpass .* does not know"):
        qpass.load(copy_of_saved)


def test_tensors_that_do_not_fit_the_graph_are_refused(copy_of_saved):
    path = copy_of_saved / TENSORS_FILE
    tensors = load_file(path)
    del tensors["backbone.layers.1.mixer.A"]
    save_file(tensors, path)
    data = path.read_bytes()
    _edit_metadata(copy_of_saved, tensors={"file": TENSORS_FILE, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    with pytest.raises(SavedModelError, match=r"missing \['backbone.layers.1.mixer.A'\]"):
        qpass.load(copy_of_saved)


def test_a_graph_folder_is_not_a_model_for_from_pretrained(calibrated, tmp_path):
    folder = qpass.save(calibrated, tmp_path / "graph")
    with pytest.raises(SavedModelError, match="qpass.load"):
        QuantizedMambaForCausalLM.from_pretrained(folder)


def test_save_refuses_what_it_cannot_rebuild(model, tmp_path):
    with pytest.raises(SavedModelError, match="qpass.apply"):
        qpass.save(model, tmp_path / "float")
    with pytest.raises(SavedModelError, match="does not record the model"):
        qpass.save(qpass.capture(model), tmp_path / "captured")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_folder_of_other_files(built, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SavedModelError, match="new or empty folder"):
        qpass.save(built["w8a8"], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _failing_save_file(tensors, path):
    """Writes part of the file, then fails as a full disk or a kill would."""
    Path(path).write_bytes(b"partial")
    raise OSError("no space left on device")


def test_interrupted_save_leaves_no_folder(built, tmp_path, monkeypatch):
    monkeypatch.setattr(serialize, "save_file", _failing_save_file)
    with pytest.raises(OSError, match="no space"):
        qpass.save(built["w8a8"], tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SavedModelError, match="does not exist"):
        qpass.load(tmp_path / "m")


def test_interrupted_save_keeps_the_earlier_save_whole(built, inputs, tmp_path, monkeypatch):
    folder = qpass.save(built["w8a8"], tmp_path / "m")
    monkeypatch.setattr(serialize, "save_file", _failing_save_file)
    with pytest.raises(OSError):
        qpass.save(built["float_sim"], folder)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    reloaded = qpass.load(folder)
    assert reloaded.mode == "w8a8" and torch.equal(reloaded(inputs).logits, built["w8a8"](inputs).logits)


def test_save_replaces_an_earlier_save(built, tmp_path):
    folder = qpass.save(built["w8a8"], tmp_path / "m")
    qpass.save(built["fp32_ssm"], folder)
    assert qpass.load(folder).mode == "fp32_ssm"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.gpu
def test_saved_on_one_device_loads_on_the_other(inputs, tmp_path):
    model = random_mamba(initializer_range=0.02).cuda()
    on_gpu = qpass.apply(model, "w8a8", calibration=[t.cuda() for t in token_batches(97, count=1)], progress=False)
    expected = on_gpu(inputs.cuda()).logits
    assert torch.equal(qpass.load(qpass.save(on_gpu, tmp_path / "gpu"), device="cuda")(inputs.cuda()).logits, expected)
    on_cpu = qpass.load(tmp_path / "gpu")
    assert on_cpu.device == torch.device("cpu")
    back = qpass.load(qpass.save(on_cpu, tmp_path / "cpu"), device="cuda")
    assert torch.equal(back(inputs.cuda()).logits, expected)
