"""Article row 3: JAX (Flax linen + Optax, TrainState, jitted step), fed by TFDS/tf.data."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from mnistbench import frameworks, mnist, models
from mnistbench.backends._article_tfds import article_datasets
from mnistbench.config import Config

FRAMEWORK = "JAX (Flax + Optax)"
LOADER = "TFDS (tf.data: shuffle, batch, map, prefetch)"


def build(cfg: Config, device: str, data: Path) -> ArticleJaxTrainer:
    jax, device = frameworks.jax(device)
    train_set, val_set, num_train, num_test = article_datasets(cfg, data)
    trainer = ArticleJaxTrainer(jax, cfg, train_set, val_set, num_train, num_test)
    trainer.device = device
    return trainer


class ArticleJaxTrainer:
    """The article's JAX code: `step` jitted with is_train static, losses summed on device."""

    def __init__(
        self, jax: Any, cfg: Config, train_set: Any, val_set: Any, num_train: int, num_test: int
    ):
        import jax.numpy as jnp
        import optax
        from flax.training.train_state import TrainState

        self.jax, self.jnp = jax, jnp
        self.device = "cpu"  # set by build() to where JAX really runs
        model = models.flax_mlp(cfg.model.hidden)
        params = model.init(jax.random.PRNGKey(cfg.train.seed), jnp.ones([1, mnist.PIXELS]))[
            "params"
        ]
        tx = optax.adam(cfg.train.lr)
        self.state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        self.train_set, self.val_set = train_set, val_set
        self.num_train, self.num_test = num_train, num_test
        self.step = _make_step(jax, jnp, optax)
        self._pending: Any = None  # last results, still possibly in flight (async dispatch)

    def train_epoch(self) -> Any:
        train_loss, n = 0.0, 0
        for x, y in self.train_set.as_numpy_iterator():
            loss, y_pred, self.state = self.step(x, y, self.state, True)
            train_loss += loss
            n += 1
        self._pending = train_loss / n
        return self._pending

    def evaluate(self) -> tuple[Any, Any]:
        val_loss, acc, n = 0.0, 0.0, 0
        for x, y in self.val_set.as_numpy_iterator():
            loss, y_pred, self.state = self.step(x, y, self.state, False)
            val_loss += loss
            acc += (self.jnp.argmax(y_pred, 1) == y).mean()
            n += 1
        self._pending = (val_loss / n, acc / n)
        return self._pending

    def sync(self) -> None:
        self.jax.block_until_ready((self.state, self._pending))

    def num_params(self) -> int:
        return sum(p.size for p in self.jax.tree_util.tree_leaves(self.state.params))


def _make_step(jax: Any, jnp: Any, optax: Any):
    @partial(jax.jit, static_argnums=(3,))
    def step(x, y, state, is_train=True):
        def loss_fn(params):
            y_pred = state.apply_fn({"params": params}, x)
            loss = optax.softmax_cross_entropy(logits=y_pred, labels=y).mean()
            return loss, y_pred

        x = x.reshape(-1, mnist.PIXELS)
        y = jnp.eye(10)[y]  # optax.softmax_cross_entropy takes one-hot labels
        if is_train:
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            (loss, y_pred), grads = grad_fn(state.params)
            state = state.apply_gradients(grads=grads)
        else:
            loss, y_pred = loss_fn(state.params)
        return loss, y_pred, state

    return step
