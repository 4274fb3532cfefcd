import matplotlib.colors as mcolors
import numpy as np
import pandas as pd

from lab.runs import plots


def test_every_plot_renders_to_png(tmp_path, digits):
    history = pd.DataFrame({"loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.8, 0.9],
                            "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.6]})
    figures = {
        "curves": plots.learning_curves(history, title="t", best_epoch=2),
        "confusion": plots.confusion_matrix(np.array([[5, 1], [2, 7]]), ["a", "b"], normalize=True),
        "grid": plots.sample_grid(digits.x_train, digits.y_train, digits.class_names, per_class=3),
        "distribution": plots.class_distribution({"train": [3, 5], "test": [1, 2]}, ["a", "b"]),
        "compare": plots.compare_curves({"run a": history, "run b": history * 0.9}),
    }
    for name, figure in figures.items():
        plots.save(figure, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name


def test_sample_predictions_are_green_when_right_and_red_when_wrong(digits):
    y_true = digits.y_test[:8]
    y_pred = y_true.copy()
    y_pred[:3] = (y_pred[:3] + 1) % 10
    figure = plots.sample_predictions(digits.x_test[:8], y_true, y_pred, digits.class_names, count=8, columns=4)
    colours = [mcolors.to_hex(ax.title.get_color()) for ax in figure.axes if ax.get_title()]
    assert colours.count(plots.WRONG) == 3 and colours.count(plots.RIGHT) == 5
    wrong_titles = [ax.get_title() for ax in figure.axes if "true:" in ax.get_title()]
    assert len(wrong_titles) == 3


def test_top_losses_shows_the_highest_loss_images_first_with_their_classes(digits):
    y_true = digits.y_test[:12].astype(int)
    y_prob = np.full((12, 10), 0.01)
    y_prob[np.arange(12), y_true] = 0.91  # right and sure...
    y_prob[3] = 0.1  # ...but image 3: unsure (loss -log 0.1)
    y_prob[7] = 0.0
    y_prob[7, (y_true[7] + 1) % 10] = 1.0  # and image 7: sure and wrong (the highest loss)
    assert list(plots.top_loss_order(y_true, y_prob, 3)) == [7, 3, 0]
    figure = plots.top_losses(digits.x_test[:12], y_true, y_prob, digits.class_names, count=4, columns=4)
    titles = [ax for ax in figure.axes if ax.get_title()]
    assert len(titles) == 4
    first = titles[0].get_title()
    assert f"true: {digits.class_names[y_true[7]]}" in first and "loss 27.63" in first
    assert mcolors.to_hex(titles[0].title.get_color()) == plots.WRONG
    assert mcolors.to_hex(titles[2].title.get_color()) == plots.RIGHT  # a right one still shows among the worst


def test_a_confusion_matrix_of_100_classes_stays_legible(tmp_path):
    from PIL import Image

    names = [f"class_name_{i}" for i in range(100)]
    matrix = np.random.default_rng(0).integers(0, 5, (100, 100)) + 40 * np.eye(100, dtype=int)
    figure = plots.confusion_matrix(matrix, names)
    ax = figure.axes[0]
    assert not ax.texts  # no counts in 10,000 cells
    assert [label.get_text() for label in ax.get_xticklabels()] == names  # every class named...
    assert all(label.get_rotation() == 90 for label in ax.get_xticklabels())  # ...upright, not overlapping
    assert max(figure.get_size_inches()) <= plots.CONFUSION_MAX_INCHES + 1
    plots.save(figure, tmp_path / "cm.png")
    assert max(Image.open(tmp_path / "cm.png").size) < 2400
    # Ten classes keep their counts.
    small = plots.confusion_matrix(np.eye(10, dtype=int) * 7, [str(i) for i in range(10)])
    assert len(small.axes[0].texts) == 100
