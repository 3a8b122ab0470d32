"""The model card names the method that trained the version (FCDD or a baseline)."""

import pytest

from pipelines.model_card import CardFacts, model_card


def _facts(objective):
    return CardFacts(
        name="fcdd-folder-nut",
        version="3",
        dataset="folder",
        cls="nut",
        seed=0,
        data_version="abc",
        net="cnn224",
        input_size=224,
        epochs=2,
        protocol="pixel",
        objective=objective,
    )


@pytest.mark.parametrize(("objective", "method"), [("fcdd", "FCDD"), ("hsc", "HSC"), ("ae", "Autoencoder")])
def test_the_card_names_the_objective_that_trained_the_version(objective, method):
    card = model_card(_facts(objective), {"image_auc": 0.9, "calibration_n": 60})
    first = card.splitlines()[0]
    assert first.startswith(f"{method}"), first
    assert "models:/fcdd-folder-nut/3" in card
