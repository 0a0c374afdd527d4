//! Transactions: writes built for [`Table::transact`], which lands them all or none.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::Table;
use crate::store::StoreError;
use crate::store::dynamodb::client::sdk_error;
use crate::store::dynamodb::expr::Expr;
use crate::store::dynamodb::item::{Item, s};
use crate::store::dynamodb::schema;

/// The answer of a transaction.
#[derive(Debug)]
pub enum Transact {
    /// Every write landed.
    Done,
    /// Nothing was written; for each write in order, whether its own condition failed.
    ConditionsFailed(Vec<bool>),
}

impl Table {
    /// A put of `item` under `condition`, as one write of a transaction.
    pub fn put_in_transaction(
        &self,
        item: Item,
        condition: Expr,
    ) -> Result<TransactWriteItem, StoreError> {
        let (names, values) = condition.bindings(None);
        let put = Put::builder()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression(&condition.text)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map_err(|err| StoreError::backend_from("DynamoDB transaction put", err))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// An update of the item `key` under `condition`, as one write of a transaction.
    pub fn update_in_transaction(
        &self,
        key: &str,
        update: Expr,
        condition: Expr,
    ) -> Result<TransactWriteItem, StoreError> {
        let (names, values) = condition.bindings(Some(&update));
        let update = Update::builder()
            .table_name(&self.name)
            .key(schema::ID, s(key))
            .update_expression(&update.text)
            .condition_expression(&condition.text)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map_err(|err| StoreError::backend_from("DynamoDB transaction update", err))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Writes `writes` all or none. `token` makes an SDK retry of a transaction that landed
    /// a no-op.
    pub async fn transact(
        &self,
        writes: Vec<TransactWriteItem>,
        token: &str,
    ) -> Result<Transact, StoreError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .client_request_token(token)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Transact::Done),
            Err(err) => err,
        };
        let failed = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => cancel
                .cancellation_reasons()
                .iter()
                .map(|reason| reason.code() == Some("ConditionalCheckFailed"))
                .collect::<Vec<bool>>(),
            _ => Vec::new(),
        };
        if failed.contains(&true) {
            Ok(Transact::ConditionsFailed(failed))
        } else {
            Err(sdk_error("TransactWriteItems", err))
        }
    }
}
