"""The attacks: what a malicious device trains on and how it rewrites its upload.

A malicious device first runs the protocol's own local training (so its upload has the
honest format, dtypes and a natural set of rows), on a fake profile for the targeted
attacks or on its real data for the untargeted ones; ``craft`` then rewrites that upload.

targeted (promote ``targets``, k unpopular items):
  fake-random   data poisoning, fake users = targets + random items (A-ra);
  fake-popular  data poisoning, fake users = targets + popular items (A-hum);
  pipattack     model poisoning, target rows aligned with the popular items' centroid;
  fedrecattack  model poisoning, target rows promoted for users approximated from a public
                share of benign interactions;
  psmu          model poisoning, target rows promoted over the recommendations of the
                attacker's own synthetic (random-item) user;
  scaled        the fake-random upload scaled by ``scale`` (boosted / model replacement).
untargeted: noise (N(0, noise_std^2) uploads), signflip (-scale x the honest upload).
PSMU is a targeted attack in its paper (Yuan et al., SIGIR 2023), so it is listed here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clients.attacks import crafting as cr
from clients.attacks import population as pop
from fedrec.federated import DeviceData
from fedrec.protocol import DeviceTask
from fedrec.threat_config import AttackConfig

Arrays = dict[str, np.ndarray]
_NOISE_STREAM = 0x4E4F49  # "NOI"
_PUBLIC_STREAM = 0x505542  # "PUB"


class Attack:
    """Base: targets, malicious set, and the identity craft (data poisoning)."""

    #: "all" = fake users with random fillers, "popular" = popular fillers, None = real data
    profile_pool: str | None = "all"

    def __init__(self, acfg: AttackConfig, seed: int, fed: Any) -> None:
        self.cfg = acfg
        self.seed = seed
        self.n_items = fed.n_items
        self.targets = pop.target_items(fed.item_popularity, acfg.targets, seed)  # [T]
        self.popular = pop.popular_items(fed.item_popularity, acfg.popular)  # [N]
        self.malicious = frozenset(pop.malicious_devices(fed.n_devices, acfg.fraction, seed).tolist())

    def fake_profiles(self, fed: Any) -> dict[int, DeviceData]:
        """The fake profile of every malicious device (empty for real-data attacks)."""
        if self.profile_pool is None:
            return {}
        pool = self.popular if self.profile_pool == "popular" else np.arange(self.n_items)
        return {d: pop.fake_profile(fed.device(d), self.targets, pool, self.cfg.filler, self.seed)
                for d in sorted(self.malicious)}

    def craft(self, upload: Arrays, task: DeviceTask) -> Arrays:
        return upload


class FakeRandom(Attack):
    profile_pool = "all"


class FakePopular(Attack):
    profile_pool = "popular"


class PipAttack(Attack):
    def craft(self, upload: Arrays, task: DeviceTask) -> Arrays:
        for name in cr.sparse_names(upload):
            d = cr.alignment_deltas(task.broadcast[name], self.targets, self.popular)
            upload = cr.with_target_deltas(upload, name, self.targets, self.cfg.scale * d)
        return upload


class Promotion(Attack):
    """Shared by FedRecAttack and PSMU: promote targets for a set of user proxies."""

    def user_positives(self, task: DeviceTask) -> list[np.ndarray]:
        raise NotImplementedError

    def craft(self, upload: Arrays, task: DeviceTask) -> Arrays:
        for name in cr.sparse_names(upload):
            d = self.target_deltas(name, task)
            upload = cr.with_target_deltas(upload, name, self.targets, self.cfg.scale * d)
        return upload

    def target_deltas(self, name: str, task: DeviceTask) -> np.ndarray:
        """Promotion step of table ``name`` [T, W]; proxies fitted on that table (a width-1
        bias table has no user part: its proxies are 1)."""
        table = task.broadcast[name]
        positives = self.user_positives(task)
        if cr.as_rows(table).shape[1] > 1:
            proxies = cr.fit_user_proxies(table, positives)
        else:
            proxies = np.ones((len(positives), 1))
        return cr.promotion_deltas(table, proxies, self.targets)


class FedRecAttack(Promotion):
    """Public interactions: a seeded share of the items of up to ``public_users`` benign users."""

    def __init__(self, acfg: AttackConfig, seed: int, fed: Any) -> None:
        super().__init__(acfg, seed, fed)
        rng = np.random.default_rng([seed, _PUBLIC_STREAM])
        benign = np.array([d for d in range(fed.n_devices) if d not in self.malicious], np.int64)
        users = np.sort(rng.choice(benign, size=min(acfg.public_users, len(benign)), replace=False))
        self.public: list[np.ndarray] = []
        for d in users:
            items = np.unique(fed.device(int(d)).train_items)
            n = max(1, int(np.ceil(acfg.public_share * len(items))))
            self.public.append(np.sort(rng.choice(items, size=n, replace=False)))
        self._cache: dict[tuple[int, str], np.ndarray] = {}  # (round, table) -> deltas

    def user_positives(self, task: DeviceTask) -> list[np.ndarray]:
        return self.public

    def target_deltas(self, name: str, task: DeviceTask) -> np.ndarray:
        """The same for every malicious device of a round: computed once per round and table."""
        if (task.rnd, name) not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] == task.rnd}
            self._cache[(task.rnd, name)] = super().target_deltas(name, task)
        return self._cache[(task.rnd, name)]


class Psmu(Promotion):
    """The synthetic user is the device's own fake profile (random items + targets); each
    round the profiles of all attackers are fitted together, once per table."""

    def __init__(self, acfg: AttackConfig, seed: int, fed: Any) -> None:
        super().__init__(acfg, seed, fed)
        self.profiles = self.fake_profiles(fed)
        self.order = {d: i for i, d in enumerate(sorted(self.profiles))}
        self._cache: dict[tuple[int, str], np.ndarray] = {}  # (round, table) -> [M, T, W]

    def target_deltas(self, name: str, task: DeviceTask) -> np.ndarray:
        if (task.rnd, name) not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] == task.rnd}
            table = task.broadcast[name]
            positives = [np.setdiff1d(self.profiles[d].train_items, self.targets)
                         for d in sorted(self.profiles)]
            proxies = (cr.fit_user_proxies(table, positives) if cr.as_rows(table).shape[1] > 1
                       else np.ones((len(positives), 1)))
            self._cache[(task.rnd, name)] = cr.promotion_deltas_each(table, proxies, self.targets)
        return self._cache[(task.rnd, name)][self.order[task.device_id]]


class Scaled(Attack):
    def craft(self, upload: Arrays, task: DeviceTask) -> Arrays:
        return cr.scale_upload(upload, self.cfg.scale)


class Noise(Attack):
    profile_pool = None

    def craft(self, upload: Arrays, task: DeviceTask) -> Arrays:
        rng = np.random.default_rng([self.seed, task.rnd, task.device_id, _NOISE_STREAM])
        return cr.noise_upload(upload, self.cfg.noise_std, rng)


class SignFlip(Attack):
    profile_pool = None

    def craft(self, upload: Arrays, task: DeviceTask) -> Arrays:
        return cr.scale_upload(upload, -self.cfg.scale)


ATTACKS: dict[str, type[Attack]] = {
    "fake-random": FakeRandom, "fake-popular": FakePopular, "pipattack": PipAttack,
    "fedrecattack": FedRecAttack, "psmu": Psmu, "scaled": Scaled, "noise": Noise,
    "signflip": SignFlip,
}


def make_attack(acfg: AttackConfig, seed: int, fed: Any) -> Attack:
    """The attack a config names (``acfg.kind`` must not be "none")."""
    return ATTACKS[acfg.kind](acfg, seed, fed)
