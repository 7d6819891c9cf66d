"""GAN option experiments (issue #16): synthetic-only AUC on the external sites.

Trains the demo-size conditional GAN (256 x 64, base 8 / max 64 channels) on
phantom site A's training scans (``runs/phantom-sites``, left by ``make demo``)
for the given steps, generates 200 images per class, trains a small CNN on the
synthetic images alone (three classifier seeds) and reports its mean AUC for
bone metastases on the real scans of sites C-F, the median best Pearson
correlation of 64x16 block averages with real training scans, and the ratio of
high-frequency energy (synthetic / real). No curation, no audit.

``.venv/bin/python bench/gan_options.py NAME STEPS '{gan spec}' '{train spec}'``
(``THREADS=1`` to run two at once). Results: ``bench/results/gan_options.md``.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fedbone.generative.trainer import GanTrainer, GanTrainSpec, class_labels
from fedbone.models.classifier import ClassifierSpec, build_classifier
from fedbone.models.gan import GanSpec

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT", "/tmp"))


def load(site):
    root = ROOT / "runs" / "phantom-sites" / f"site-{site}" / "cache"
    meta = json.loads(Path(f"{root}/meta.json").read_text())
    idx = json.loads(Path(f"{root}/index.json").read_text())
    imgs = np.memmap(
        f"{root}/images.f16", dtype=np.float16, mode="r", shape=tuple(meta["shape"])
    )
    bm = np.array([r["label_bm"] if r["label_bm"] is not None else -1 for r in idx])
    ca = np.array([r["label_ca"] if r["label_ca"] is not None else -1 for r in idx])
    split = np.array([r["split"] for r in idx])
    return np.asarray(imgs, dtype=np.float32), bm, ca, split


def blocks(x):
    return x.reshape(len(x), 64, 4, 16, 4).mean(axis=(2, 4)).reshape(len(x), -1)


def best_corr(syn, real):
    a = blocks(syn)
    b = blocks(real)
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    return np.median((a @ b.T / a.shape[1]).max(1))


def hf_ratio(syn, real):
    def hf(x):
        d = np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()
        return d

    return hf(syn) / hf(real)


def classify(train_x, train_y, test_x, test_y, epochs=6, seed=0):
    torch.manual_seed(seed)
    model = build_classifier(ClassifierSpec(architecture="small-cnn"))
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    xs = torch.from_numpy(train_x)[:, None]
    ys = torch.from_numpy(train_y.astype(np.float32))
    for _ in range(epochs):
        model.train()
        for b in np.array_split(rng.permutation(len(xs)), max(1, len(xs) // 32)):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(xs[b]).squeeze(-1), ys[b]
            )
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        s = torch.cat(
            [
                model(torch.from_numpy(test_x[i : i + 128])[:, None]).squeeze(-1)
                for i in range(0, len(test_x), 128)
            ]
        ).numpy()
    return roc_auc_score(test_y, s)


def main(name, steps, spec_kw, train_kw, n_per_class=200):
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    x, bm, ca, split = load("A")
    lab = class_labels(bm, ca)
    keep = (lab >= 0) & (split == "train")
    xt, lt = x[keep], lab[keep]
    spec = GanSpec(
        height=256,
        width=64,
        latent_dim=64,
        style_dim=64,
        base_channels=8,
        max_channels=64,
        **spec_kw,
    )
    tr = GanTrainSpec(
        batch_size=16,
        class_balanced=True,
        seed=0,
        device="cpu",
        steps=steps,
        **train_kw,
    )
    trainer = GanTrainer(spec, tr)
    global EXT
    parts = [load(s) for s in "CDEF"]
    EXT = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    t = time.time()
    out = {}
    done = 0
    for chk in [steps]:
        trainer.train(xt, lt, chk - done)
        done = chk
        wanted = np.repeat(np.arange(4), n_per_class)
        syn = trainer.generate(wanted, seed=1)
        cx, cbm = EXT
        ok = cbm >= 0
        aucs = [
            classify(syn, (wanted >= 2).astype(int), cx[ok], cbm[ok], seed=k)
            for k in range(3)
        ]
        auc = float(np.mean(aucs))
        out[chk] = dict(
            sec=round(time.time() - t),
            synonly_auc=round(auc, 3),
            corr=round(float(best_corr(syn[::4], xt[:400])), 3),
            hf=round(float(hf_ratio(syn, xt[:400])), 3),
        )
        print(name, chk, out[chk], flush=True)
        np.save(f"{OUT}/{name}-{chk}.npy", syn[:: n_per_class // 8].astype(np.float16))
        np.save(f"{OUT}/{name}-{chk}-all.npy", syn.astype(np.float16))
    return out


if __name__ == "__main__":
    name = sys.argv[1]
    steps = int(sys.argv[2])
    spec_kw = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    train_kw = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    main(name, steps, spec_kw, train_kw)
