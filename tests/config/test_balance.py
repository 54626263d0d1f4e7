"""config.balance: how a serving process of `carnet serve --workers N` gates its accepting by its share
of the open connections (the processes themselves: tests/config/test_cli.py)."""

from __future__ import annotations

from config.balance import STALE_MS, AcceptBalancer, ConnectionTable


class _Port:
    def __init__(self) -> None:
        self.reading = True
        self.numberAccepts = 50
        self.accepts_per_read: list[int] = []

    def doRead(self) -> None:  # noqa: N802
        self.accepts_per_read.append(self.numberAccepts)

    def startReading(self) -> None:  # noqa: N802
        self.reading = True

    def stopReading(self) -> None:  # noqa: N802
        self.reading = False


class _Protocol:
    def connectionLost(self, reason) -> None:  # noqa: N802
        pass


class _Factory:
    def buildProtocol(self, addr):  # noqa: N802
        return _Protocol()


class _Reactor:
    def callLater(self, *a, **k):  # noqa: N802 - LoopingCall's clock; the loop is driven by hand here
        class _Call:
            def cancel(self) -> None:
                pass

            def active(self) -> bool:
                return True

        return _Call()

    def seconds(self) -> float:
        return 0.0


def _process(table, slot, now):
    port, factory = _Port(), _Factory()
    balancer = AcceptBalancer(_Reactor(), port, table, slot, clock=lambda: now[0])
    balancer.install(factory)
    balancer.start()
    return balancer, port, factory


def test_a_process_stops_accepting_while_it_holds_more_connections_than_another():
    table = ConnectionTable.create(2)
    now = [10_000]
    a, port_a, factory_a = _process(table, 0, now)
    b, port_b, factory_b = _process(table, 1, now)
    assert port_a.reading and port_b.reading
    first = factory_a.buildProtocol(None)
    assert not port_a.reading  # 1 against 0
    factory_b.buildProtocol(None)
    a.check()  # its periodic look
    assert port_a.reading and port_b.reading  # 1 and 1
    first.connectionLost(None)
    b.check()
    assert port_a.reading and not port_b.reading  # 0 against 1
    port_a.doRead()
    assert port_a.accepts_per_read == [1]  # one connection per wake-up, then look again
    a.stop()
    b.stop()
    assert port_a.reading and port_b.reading


def test_a_process_that_stopped_refreshing_its_slot_does_not_hold_the_others_back():
    table = ConnectionTable.create(2)
    now = [10_000]
    a, port_a, factory_a = _process(table, 0, now)
    _process(table, 1, now)  # never accepts, then stops refreshing (exited, or stuck)
    factory_a.buildProtocol(None)
    assert not port_a.reading
    now[0] += STALE_MS + 1
    a.check()
    assert port_a.reading


def test_another_process_sees_the_table_through_its_descriptor():
    table = ConnectionTable.create(3)
    table.set(2, 7, 123)
    other = ConnectionTable.attach(table.fd)
    assert other.slots == 3 and other.connections(2) == 7
    assert other.least_live(123) == 0 and other.least_live(123 + STALE_MS + 1) is None
