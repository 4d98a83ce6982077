"""The embedded broker's topic index finds exactly the filters (and retained topics) amqtt's own
matching would, wildcards, ``$`` topics and empty levels included, also after removals."""

from __future__ import annotations

import itertools
import logging

from amqtt.broker import Broker

from broker.embedded import TopicTrie


class _Quiet:
    logger = logging.getLogger("test")


def amqtt_matches(topic: str, a_filter: str) -> bool:
    return Broker._matches(_Quiet(), topic, a_filter)  # type: ignore[arg-type]


def test_topic_index_agrees_with_amqtt():
    filters, topics = set(), set()
    for n in range(1, 4):
        for combo in itertools.product(["a", "b", "$s", "+", "#", ""], repeat=n):
            if "#" in combo[:-1]:
                continue
            filters.add("/".join(combo))
            if "+" not in combo and "#" not in combo:
                topics.add("/".join(combo))
    by_filter, by_topic = TopicTrie(), TopicTrie()
    for f in filters:
        by_filter.add(f)
    for t in topics:
        by_topic.add(t)
    for t in topics:
        assert set(by_filter.filters_matching(t)) == {f for f in filters if amqtt_matches(t, f)}, t
    for f in filters:
        assert set(by_topic.topics_matching(f)) == {t for t in topics if amqtt_matches(t, f)}, f
    removed = sorted(filters)[::3]
    for f in removed:
        by_filter.remove(f)
    by_filter.remove("never/added")
    kept = filters - set(removed)
    for t in topics:
        assert set(by_filter.filters_matching(t)) == {f for f in kept if amqtt_matches(t, f)}, t
