"""Generate speech for every clip of a test split, batched, resumable, sharded over GPUs.

    python inference_full_test_split.py dataset=lrs3 generate.lipread_text_dir=lipread/LRS3 \
        generate.ckpt_path=exp/LRS3/wnet_h512_d12_T400_betaT0.02/checkpoint/1000000.pkl
    torchrun --nproc_per_node 8 inference_full_test_split.py dataset=lrs2 generate.lipread_text_dir=...
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST --master_port 29500 \
        inference_full_test_split.py ...      # (and --node_rank 1 on the second machine)

Outputs: <save_dir>/generated_mels/<LRS2|LRS3>/w1=<w_video>_w2=<w_asr>_asr_start=<asr_start>/<video_id>
.wav, .wav.spec, .png, _gt.png, .txt (and .mp4 with generate.save_video=true). Re-running skips
finished clips; several runs on one save_dir share the clips (lock files). Each clip's noise is
seeded from generate.seed and its id. Ends with a summary per rank; the exit status is 1 (with one
`error:` line) when any clip of the split was not generated. Score them with evaluate.py.
"""
import logging

import hydra
from omegaconf import DictConfig

from utils.distributed import cleanup_distributed, init_distributed
from utils.errors import LipVoicerError, exit_on_user_error
from pipelines.split_generation import generate_split, split_failure


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    info = init_distributed(cfg.generate.device)
    try:
        summary = generate_split(cfg, info.rank, info.world_size, info.device)
        print(summary.report(), flush=True)
        failure = split_failure(summary, info.device)   # every rank: the counts of all ranks
        if failure:
            raise LipVoicerError(failure)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
