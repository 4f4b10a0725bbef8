"""Trains test_players.py's two-player CriticGame for 6 steps of a global batch of 16, in one process or under
torchrun, and saves both players' weights from rank 0 to the file named by argv[1] (test_players.py runs it)."""

from __future__ import annotations

import sys
from dataclasses import replace

import torch
from torch import nn

from test_players import CriticGame, _batch, _cfg  # this script's folder is on sys.path
from vaekit.objectives import OBJECTIVES
from vaekit.training.distributed import setup, teardown
from vaekit.training.step import build_state, train_step

OBJECTIVES.register("critic-game")(lambda c: CriticGame(c.objective))
cfg = _cfg()
cfg = replace(cfg, objective=replace(cfg.objective, name="critic-game"))
topology = setup("cpu", 16)
torch.manual_seed(0)
state = build_state(cfg, topology, total_steps=100, others={"critic": nn.Linear(4, 1)})
for i in range(6):
    train_step(state, _batch(i), cfg, 100, rows=topology.rows(16))
if topology.is_main:
    torch.save({name: p.module.state_dict() for name, p in state.players.items()}, sys.argv[1])
teardown(topology)
