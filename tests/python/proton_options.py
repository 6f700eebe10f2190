"""Link options the Proton scripts share.

`Caps("topic")` asks for a topic (not a queue); `Caps("shared", "global", "topic")` with
`DurableSubscription()` for a shared durable subscription (see adapters/README.md, wharf-amqp).
"""
from proton import Data, symbol
from proton.reactor import LinkOption


class Caps(LinkOption):
    """Capabilities on the link's terminus: the source of a receiver, the target of a sender."""

    def __init__(self, *caps):
        self.caps = caps

    def apply(self, link):
        term = link.source if link.is_receiver else link.target
        term.capabilities.put_array(False, Data.SYMBOL)
        term.capabilities.enter()
        for c in self.caps:
            term.capabilities.put_symbol(symbol(c))
        term.capabilities.exit()
