-- The stock group looks up the holds of a batch's orders by order id alone; the key starts
-- with the SKU, so without this index every stock batch read the whole table, a cost that
-- grew with every order ever placed.
CREATE INDEX IF NOT EXISTS stock_holds_by_order ON stock_holds (order_id);
