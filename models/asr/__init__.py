"""ASR guidance classifier (timestep-conditioned audio Efficient Conformer CTC); see models/asr/model.py."""
from models.asr.model import (ASRGuidanceModel, asr_checkpoint_path, asr_state_dict, build_asr, count_parameters,
                              ctc_loss, ctc_loss_grad, ctc_loss_per_clip, load_asr_checkpoint, output_lengths,
                              save_asr_checkpoint)

__all__ = ["ASRGuidanceModel", "asr_checkpoint_path", "asr_state_dict", "build_asr", "count_parameters", "ctc_loss",
           "ctc_loss_grad", "ctc_loss_per_clip", "load_asr_checkpoint", "output_lengths", "save_asr_checkpoint"]
