"""Pieces shared by the fast JAX rows (jax-scan, jax-grain): state, loss, step, metrics.

Same model and optimizer as the article's JAX row: models.flax_mlp initialised with
PRNGKey(seed), optax.adam(lr), so the rows start from identical parameters. The loss is the
cross-entropy of the model's log_softmax output (negative log-likelihood, mean over the
batch), which is what the article computes. JAX is imported inside each function: a backend
module must be importable before frameworks.configure_threads has run.
"""

from __future__ import annotations

from typing import Any

from mnistbench import mnist, models
from mnistbench.config import Config


def init_state(cfg: Config, device: Any) -> Any:
    """Flax TrainState on `device` (a jax.Device): the article's MLP at PRNGKey(seed), Adam."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training.train_state import TrainState

    model = models.flax_mlp(cfg.model.hidden)
    params = model.init(jax.random.PRNGKey(cfg.train.seed), jnp.ones([1, mnist.PIXELS]))["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(cfg.train.lr))
    # Committed to the device, as a jitted step's outputs are: an uncommitted first state
    # makes XLA compile the step a second time, inside the timed epoch 2.
    return jax.device_put(state, device)


def data_key(seed: int, epoch: Any) -> Any:
    """The shuffle key of one epoch: independent of the init key PRNGKey(seed)."""
    import jax

    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 1), epoch)


def nll(log_probs: Any, y: Any) -> Any:
    """Per-example cross-entropy of log_softmax outputs, shape (N,)."""
    import jax.numpy as jnp

    return -jnp.take_along_axis(log_probs, y[:, None], axis=1)[:, 0]


def train_step(state: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """One Adam step on one batch; returns (new state, mean batch loss). Pure: jit or scan it."""
    import jax

    def loss_fn(params):
        return nll(state.apply_fn({"params": params}, x), y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def per_example(state: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """(loss, correct as float32) per example, no gradient: evaluation."""
    import jax.numpy as jnp

    log_probs = state.apply_fn({"params": state.params}, x)
    return nll(log_probs, y), (jnp.argmax(log_probs, -1) == y).astype(jnp.float32)


def article_mean(values: Any, batch_size: int) -> Any:
    """The article's validation average: the mean over batches of `batch_size` (the last one
    smaller) of each batch's mean. Differs from the plain mean only when the last batch is
    partial; kept so that val_acc and val_loss compare with the article's rows exactly."""
    import jax.numpy as jnp

    n = values.shape[0]
    full = n // batch_size * batch_size  # static: shapes are known at trace time
    means = values[:full].reshape(-1, batch_size).mean(axis=1)
    if full < n:
        means = jnp.concatenate([means, values[full:].mean()[None]])
    return means.mean()


def num_params(state: Any) -> int:
    import jax

    return sum(p.size for p in jax.tree_util.tree_leaves(state.params))
