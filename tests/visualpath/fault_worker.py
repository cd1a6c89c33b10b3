"""Train the small pathway of the engine tests in a run directory. Used by test_faults.py,
under tests/killpoint.py to die at a point of a checkpoint write."""

import sys

import torch

from tests.visualpath.test_engine import CPU, SPEC, Images, _model, _step
from visualpath.engine import RunLog, build_optimizer, fit, make_loader

if __name__ == "__main__":
    run_dir, resume = sys.argv[1], sys.argv[2] == "resume"
    torch.set_num_threads(1)
    model = _model()
    torch.manual_seed(123)
    opt = build_optimizer(model, SPEC, CPU)
    loader = make_loader(Images(), SPEC.batch_size, CPU, shuffle=True, seed=5)
    fit("stage", model, _step, loader, opt, SPEC, CPU, RunLog(run_dir, CPU), resume=resume, log_every=1,
        checkpoint_every=2)
