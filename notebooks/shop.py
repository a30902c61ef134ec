"""The analytics example: a small shop with customers, products and orders.

Imported by the notebook's kernel (``%plasma connect ... --schema shop.py``) and by
``plasma-nb serve notebooks/shop.py``. See analytics-duckdb.ipynb.
"""

from plasma_nb import MutationError, Mutators, Schema, col, table

customers = table(
    "customers",
    id=col.id(),
    name=col.text(),
    city=col.text(),
)
products = table(
    "products",
    id=col.id(),
    name=col.text(),
    price=col.real(),
)
orders = table(
    "orders",
    id=col.id(),
    customer=col.text(),
    product=col.text(),
    quantity=col.integer(),
    placed=col.timestamp(),
    shipped=col.boolean(default=False),
)
schema = Schema([customers, products, orders], version="1")
mutators = Mutators(schema)


@mutators.register
async def add_customer(tx, *, id: str, name: str, city: str):
    await tx.upsert(customers).values(id=id, name=name, city=city)


@mutators.register
async def add_product(tx, *, id: str, name: str, price: float):
    if price < 0:
        raise MutationError("a price cannot be negative")
    await tx.upsert(products).values(id=id, name=name, price=price)


@mutators.register
async def place_order(tx, *, id: str, customer: str, product: str, quantity: int, placed: str):
    if quantity <= 0:
        raise MutationError("an order needs a positive quantity")
    if await tx.get(customers, customer) is None:
        raise MutationError(f"no customer {customer!r}")
    if await tx.get(products, product) is None:
        raise MutationError(f"no product {product!r}")
    await tx.insert(orders).values(
        id=id, customer=customer, product=product, quantity=quantity, placed=placed
    )


@mutators.register
async def ship_order(tx, *, id: str):
    order = await tx.get(orders, id)
    if order is None:
        raise MutationError(f"no order {id!r}")
    await tx.update(orders).set(shipped=True).where(orders.id == id)
