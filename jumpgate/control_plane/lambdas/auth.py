"""Lambda entry point of the ``auth`` function (its routes: ``protocol.functions``)."""

from jumpgate.control_plane.lambdas.runtime import entry_point
from jumpgate.protocol.functions import Function

handler = entry_point(Function.AUTH)
