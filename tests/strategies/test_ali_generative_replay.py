"""ALIGenerativeReplay is exactly Naive plus ALIReplayPlugin."""
import torch
from avalanche.training import Naive
from omegaconf import OmegaConf

from strategies.ali_generative_replay import ALIGenerativeReplay
from strategies.ali_replay_plugin import ALIReplayPlugin

REPLAY = {"source": "class_latent", "labels": "solver_soft", "replay_size": 50, "optim": {"lr_d": 5e-4}}


def _train(build, stream):
    for experience in stream.train_stream[:3]:
        build.train(experience)
    return build


def test_same_seed_same_result_as_naive_with_plugin(stream, make_ali, make_solver, evaluator):
    torch.manual_seed(0)
    solver_a, ali_a = make_solver(), make_ali()
    a = _train(ALIGenerativeReplay(model=solver_a, optimizer=torch.optim.Adam(solver_a.parameters(), 1e-3),
                                   ali=ali_a, replay=OmegaConf.create(REPLAY), train_mb_size=20,
                                   evaluator=evaluator()), stream)
    torch.manual_seed(0)
    solver_b, ali_b = make_solver(), make_ali()
    plugin = ALIReplayPlugin(ali_b, **REPLAY)
    _train(Naive(model=solver_b, optimizer=torch.optim.Adam(solver_b.parameters(), 1e-3),
                     plugins=[plugin], train_mb_size=20, evaluator=evaluator()), stream)

    for (name, pa), pb in zip(solver_a.state_dict().items(), solver_b.state_dict().values()):
        assert torch.equal(pa, pb), name
    for (name, pa), pb in zip(ali_a.state_dict().items(), ali_b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert torch.equal(a.replay_plugin.last_replay[0], plugin.last_replay[0])
    with torch.no_grad():
        x = torch.stack([stream.test_stream[0].dataset[i][0] for i in range(20)])
        assert torch.equal(solver_a(x).argmax(1), solver_b(x).argmax(1))
    assert a.nbytes() == plugin.nbytes()
    assert a.ali is ali_a
