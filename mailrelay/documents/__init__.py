"""Official documents: seal (S/MIME sign), verify on arrival, signed receipts."""
