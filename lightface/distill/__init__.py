"""Knowledge distillation from a face-recognition teacher (dlib's ResNet, optional extra ``lightface[teacher]``).

:mod:`.teacher` computes teacher embeddings for an LMDB once (resumable) and stores them
beside it; :mod:`.loss` holds the student-side losses of ``train_lightcnn --distill`` (and ``--distill-relation``).
Nothing here is needed at inference: the shipped models are plain Light CNNs.
"""
from .loss import DistillHead, distill_loss, relation_loss
from .teacher import TEACHERS, DlibTeacher, embeddings_path, load_teacher_embeddings, teacher_embeddings_for_lmdb

__all__ = ["DistillHead", "distill_loss", "relation_loss", "TEACHERS", "DlibTeacher", "embeddings_path",
           "load_teacher_embeddings", "teacher_embeddings_for_lmdb"]
