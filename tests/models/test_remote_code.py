"""A saved model of every registry arch loads with the Auto classes and ``trust_remote_code=True`` in a fresh
process that has not imported tttlm (``models/remote_code.py``), gives the same logits, and runs in a
``transformers.pipeline``; without ``trust_remote_code`` the message says what to pass."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import torch
from baseline_testing import CASE_IDS, CASES, make, random_ids

from tttlm.data.tokenizer import train_tokenizer
from tttlm.models.remote_code import AUTO_MODULE

# Runs in a fresh interpreter, one per saved model: after a first load tttlm is imported and its classes are
# registered, so a second load in the same process would not take the remote-code path. Checks that tttlm was not
# imported before the load, writes the logits of the given ids, loads the tokenizer and runs a pipeline.
_LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    path, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
    imported_before = "tttlm" in sys.modules
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float64).eval()
    with torch.no_grad():
        np.save(f"{path}/logits.npy", model(ids).logits.double().numpy())
    AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    generate = pipeline("text-generation", model=path, trust_remote_code=True)
    text = generate("ab", max_new_tokens=3, do_sample=False)[0]["generated_text"]
    cls = type(model)
    print(json.dumps({"imported_before": imported_before, "class": f"{cls.__module__}.{cls.__name__}", "text": text}))
    """
)
_NO_TRUST = textwrap.dedent(
    """
    import sys
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(sys.argv[1])
    """
)
_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PATH": "/usr/bin:/bin"}


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_ENV,
    )


def test_every_arch_loads_without_importing_tttlm(tmp_path) -> None:
    tokenizer_dir = tmp_path / "tokenizer"
    train_tokenizer(["ab ba abab " * 50, "a b c " * 40], tokenizer_dir, vocab_size=300)
    ids = random_ids(1, 12, seed=4) % 300
    expected, dirs = {}, {}
    for (arch, overrides), name in zip(CASES, CASE_IDS, strict=True):
        model = make(arch, vocab_size=300, **overrides)
        out = tmp_path / name
        model.save_pretrained(out)
        for file in tokenizer_dir.iterdir():
            (out / file.name).write_bytes(file.read_bytes())
        with torch.no_grad():
            expected[name] = model(ids).logits.double().numpy()
        dirs[name] = str(out)
        if arch != "transformer":  # transformers' own Llama needs no code of ours
            auto_map = json.loads((out / "config.json").read_text())["auto_map"]
            assert auto_map["AutoModelForCausalLM"] == f"{AUTO_MODULE}.{type(model).__name__}"
            assert (out / f"{AUTO_MODULE}.py").exists()
    loaders = {name: _start(_LOADER, path, json.dumps(ids.tolist())) for name, path in dirs.items()}
    for name, loader in loaders.items():
        stdout, stderr = loader.communicate(timeout=300)
        assert loader.returncode == 0, f"{name}: {stderr[-3000:]}"
        report = json.loads(stdout.strip().splitlines()[-1])
        assert report["imported_before"] is False
        assert report["class"].startswith("tttlm.") or name == "transformer", report
        assert report["text"].startswith("ab")
        logits = np.load(f"{dirs[name]}/logits.npy")
        np.testing.assert_allclose(logits, expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_without_trust_remote_code_the_message_says_what_to_pass(tmp_path) -> None:
    make("ttt-linear").save_pretrained(tmp_path / "model")
    loader = _start(_NO_TRUST, str(tmp_path / "model"))
    _, stderr = loader.communicate(timeout=300)
    assert loader.returncode != 0
    assert "trust_remote_code=True" in stderr
