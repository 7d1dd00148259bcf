"""Score generated speech against the ground truth (docs/evaluate.md).

    python evaluate.py evaluate.generated_dir=<folder of <video_id>.wav> dataset.root=/data/LRS3
    python evaluate.py evaluate.generated_dir=... evaluate.decoder=beam evaluate.device=cuda
    python evaluate.py evaluate.generated_dir=... evaluate.recognizer=none     # no WER / CER
    python evaluate.py evaluate.generated_dir=... evaluate.recognizer=hf:openai/whisper-small
    python evaluate.py "evaluate.compare=[published/LRS3,generated/run_a]" evaluate.min_coverage=0
    python evaluate.py evaluate.generated_dir=... evaluate.table=paper evaluate.lse=true \
        evaluate.recognizer=hf:openai/whisper-large-v3 evaluate.speaker_model=hf:microsoft/wavlm-base-plus-sv

Writes metrics_per_clip.csv, metrics_summary.json and metrics.md into evaluate.out_dir
(default: the generated folder) and prints the Markdown table, with the coverage of the split
(clips scored / clips in the split). Below evaluate.min_coverage (default 1.0) it scores nothing
and exits 1 with one line; evaluate.min_coverage=0 scores whatever is there. With evaluate.compare
(two or more folders) it scores each and writes comparison.md / .json / .png (pipelines/compare.py).
LSE-C / LSE-D (SyncNet on each clip's video) come when the SyncNet weights are there (evaluate.lse);
evaluate.table=paper also writes paper_table.md / .json: LipVoicer's columns with 95 % intervals for the
generated audio and for the ground truth (pipelines/paper_table.py).
"""
import logging

import hydra
from omegaconf import DictConfig

from utils.errors import exit_on_user_error
from pipelines.evaluation import run_evaluation


@hydra.main(version_base=None, config_path="configs", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    logging.getLogger().setLevel(logging.INFO)
    if cfg["evaluate"].get("compare"):
        from pipelines.compare import run_comparison

        result = run_comparison(cfg)
        print(result["table"], end="")
        print(f"comparison: {result['outputs']['md'].parent}")
        return
    result = run_evaluation(cfg)
    print(result["table"], end="")
    print(f"metrics: {result['outputs']['md'].parent}")


if __name__ == "__main__":
    main()
