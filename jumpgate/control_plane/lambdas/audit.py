"""Lambda entry point of the ``audit`` function (its routes: ``protocol.functions``)."""

from jumpgate.control_plane.lambdas.runtime import entry_point
from jumpgate.protocol.functions import Function

handler = entry_point(Function.AUDIT)
