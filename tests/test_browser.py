"""The explorer page in a real browser: headless Chromium driven by Selenium.

The page is opened from disk, its rendered DOM is read (layers, heads and tokens drawn,
the selected head after a key press, no console errors), its rollout is compared with
:func:`mmt_numpy.viz.attention_rollout`, and a screenshot is checked to be a picture, not
a blank page.  Skipped, with the reason, where Selenium or Chromium is missing; ``.ci/run``
installs both, so CI runs it.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import data, viz
from mmt_numpy.explorer import explore
from mmt_numpy.explorer.browser import browser_problem, open_page, page_errors
from mmt_numpy.nn import ImageTextModel

NUM_LAYERS, NUM_HEADS = 2, 4


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    _, test = data.make_vqa_splits(20, 6, seed=3)
    rows = np.arange(5)
    model = ImageTextModel(
        len(data.TOKENIZER),
        192,
        len(data.ANSWERS),
        num_heads=NUM_HEADS,
        num_layers=NUM_LAYERS,
        max_len=9,
        image_grid=(3, 3),
        rng=0,
    )
    for layer in model.transformer.encoder.layers:
        layer.self_attn.W_q.data *= 6  # peaky attention, as after training: layers no longer commute
    page = explore(
        model,
        test.ids[rows],
        test.patches()[rows],
        test.images[test.image_index[rows]],
        test.lengths[rows],
        vocab=data.TOKENIZER.vocab,
        answers=data.ANSWERS,
        targets=test.answers[rows],
    )
    _, cache = model.forward(test.ids[rows], test.patches()[rows], test.lengths[rows])
    return page.save(tmp_path_factory.mktemp("explorer") / "page.html"), page, cache


@pytest.fixture(scope="module")
def browser(page_path):
    problem = browser_problem()
    if problem is not None:  # every test here needs the browser, so they all skip, saying why
        pytest.skip(f"no browser: {problem}")
    with open_page(page_path[0]) as driver:
        yield driver


@pytest.fixture
def driver(browser):
    browser.refresh()  # every test starts from the page as it loads
    browser.execute_script("return 1")
    return browser


def _count(driver, selector: str) -> int:
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def _body(driver, name: str) -> str:
    return driver.execute_script("return document.body.dataset[arguments[0]]", name)


def _press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver.find_element("tag name", "body").click()  # focus the page, not a control
    ActionChains(driver).send_keys(key).perform()


def test_the_page_draws_every_layer_head_and_token(driver, page_path):
    _, page, _ = page_path
    example = page.data["examples"][0]
    L, Lt = len(example["tokens"]), example["num_text"]
    assert _body(driver, "ready") == "true"
    assert _count(driver, "#layers button") == NUM_LAYERS
    assert _count(driver, "#heads button.head") == NUM_HEADS
    assert _count(driver, "#queries .token") == L and _count(driver, "#keys .token") == L
    assert _count(driver, "#grid canvas.thumb") == NUM_LAYERS * NUM_HEADS
    assert _count(driver, "#words .word") == Lt
    assert _count(driver, "#patches .patch") == 9
    assert _count(driver, "#example option") == 5
    masked = sum(not k for k in example["keep"])
    assert masked > 0 and _count(driver, "#keys .token.masked") == masked
    labels = driver.execute_script(
        "return [...document.querySelectorAll('#keys .token .label')].map(e => e.textContent)"
    )
    assert labels == example["tokens"]
    assert page_errors(driver) == []


def test_keys_choose_the_head_and_the_layer(driver):
    from selenium.webdriver.common.keys import Keys

    assert (_body(driver, "head"), _body(driver, "layer")) == ("0", "0")
    _press(driver, Keys.ARROW_RIGHT)
    assert _body(driver, "head") == "1"
    pressed = driver.execute_script(
        "return [...document.querySelectorAll('#heads button')]"
        ".filter(b => b.getAttribute('aria-pressed') === 'true').map(b => b.textContent)"
    )
    assert pressed == ["1"]
    _press(driver, Keys.ARROW_LEFT + Keys.ARROW_LEFT)
    assert _body(driver, "head") == str(NUM_HEADS - 1)  # wraps around
    _press(driver, "a")
    assert _body(driver, "head") == "all"
    _press(driver, "3")
    assert _body(driver, "head") == "2"
    _press(driver, Keys.ARROW_DOWN)
    assert _body(driver, "layer") == "1"
    _press(driver, "r")
    assert _body(driver, "rollout") == "true"
    _press(driver, "n")
    assert _body(driver, "example") == "1"
    assert page_errors(driver) == []


def test_hovering_a_word_and_a_patch(driver, page_path):
    from selenium.webdriver.common.action_chains import ActionChains

    _, page, _ = page_path
    example = page.data["examples"][0]
    word = driver.find_elements("css selector", "#words .word")[2]
    ActionChains(driver).move_to_element(word).perform()
    caption = driver.find_element("id", "cross-caption").text
    assert caption.startswith(f"\u201c{example['tokens'][2]}\u201d \u2192 image (layer 0, head 0)")
    shares = [
        float(v)
        for v in driver.execute_script(
            "return [...document.querySelectorAll('#patches .patch')].map(p => p.textContent)"
        )
    ]
    assert len(shares) == 9 and abs(sum(shares) - 1) < 0.02  # renormalised over the image
    patch = driver.find_elements("css selector", "#patches .patch")[4]
    ActionChains(driver).move_to_element(patch).perform()
    assert "Which words attend to img 1,1" in driver.find_element("id", "cross-caption").text
    values = driver.execute_script(
        "return [...document.querySelectorAll('#words .word .value')].map(v => v.textContent)"
    )
    kept = example["keep"][: example["num_text"]]
    assert all((v != "") == k for v, k in zip(values, kept, strict=True))
    thumb = driver.find_elements("css selector", "#grid canvas.thumb")[NUM_HEADS + 2]  # layer 1, head 2
    thumb.click()
    assert driver.execute_script("return document.getElementById('detail').hidden") is False
    assert (_body(driver, "layer"), _body(driver, "head")) == ("1", "2")
    assert page_errors(driver) == []


def test_the_page_rollout_is_viz_attention_rollout(driver, page_path):
    _, page, cache = page_path
    L = len(page.data["examples"][0]["tokens"])
    expected = viz.attention_rollout([w[0] for w in cache.weights])  # the model's own weights
    in_browser = np.array(driver.execute_script("return window.__explorerRollout(0)")).reshape(L, L)
    # Within what one-byte weights allow; the layers taken in the wrong order are much further off.
    np.testing.assert_allclose(in_browser, expected, atol=0.01)
    wrong_order = viz.attention_rollout([w[0] for w in cache.weights][::-1])
    assert np.abs(wrong_order - expected).max() > 0.03


def test_screenshot_is_a_picture(driver, tmp_path):
    from matplotlib import image as mpimg

    path = tmp_path / "shot.png"
    assert driver.save_screenshot(str(path))
    pixels = mpimg.imread(path)[..., :3]
    assert pixels.shape[0] > 500 and pixels.shape[1] > 1000
    assert pixels.std() > 0.05  # not one flat colour
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200  # text, heat maps and the picture, not a blank page
    assert (pixels.min(axis=-1) < 0.9).mean() > 0.05  # a fair share of the page is not white
