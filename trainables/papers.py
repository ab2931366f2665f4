"""The two papers whose protocols the shipped specs reproduce ("paper 1", "paper 2").

Every "paper 1" / "paper 2" in the code, the specs' comments and the report means one of
these. Copies of the texts the project worked from carry no publication date; the years
below are those of the papers' latest references (the earliest they can be from).

* **Paper 1**: Liyuan Wang, Yulong Chen, Xiaoye Wang, Ruixing Wang, Hao Chen and Yinhai
  Zhu (Hubei Normal University), *Research on Remote Sensing Image Classification Based on
  Transfer Learning and Data Augmentation* (2022 or later). ResNet50 with ImageNet weights
  ("ResNet50-TL", log-softmax head) against SVM, AlexNet, VGG, GoogLeNet and DenseNet on
  five NWPU-RESISC45 classes, 700 images each, split 70/10/20; augmentation by resize 254
  and random 224 crops with flips (section 3.2, Figs. 4-5); Tables 1-3 (scratch, with
  augmentation, before and after fine-tuning), Table 4 (learning rate, epochs, batch
  size); a cross-check on RSSCN7. Specs: ``search_spaces/resnet_nwpu.yaml``,
  ``search_spaces/rsscn7.yaml``.
* **Paper 2**: Leyu Cao (Beijing Jiaotong University), *A MobileNetV2 model of transfer
  learning is employed for remote sensing image classification* (2024 or later).
  MobileNetV2 with ImageNet weights on UC-Merced (21 classes, 80/20 split), Adam, lr 1e-5,
  batch 16, 60 epochs; accuracy, F1 and Cohen's kappa against ResNet18, ShuffleNetV2, VGG16
  and AlexNet, with parameters and FLOPs (Table 2). Spec:
  ``search_spaces/mobilenet_ucmerced.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    """A citation: who, what, when, and the spec that reproduces its protocol."""

    authors: str
    title: str
    year: str
    specs: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.authors}, {self.title} ({self.year})"


PAPER_1 = Paper(
    authors="L. Wang, Y. Chen, X. Wang, R. Wang, H. Chen, Y. Zhu",
    title="Research on Remote Sensing Image Classification Based on Transfer Learning and "
    "Data Augmentation",
    year="2022 or later",
    specs=("resnet_nwpu.yaml", "rsscn7.yaml"),
)
PAPER_2 = Paper(
    authors="L. Cao",
    title="A MobileNetV2 model of transfer learning is employed for remote sensing image "
    "classification",
    year="2024 or later",
    specs=("mobilenet_ucmerced.yaml",),
)
