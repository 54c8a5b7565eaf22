"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25 18:50:13.523851
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Generated from cloud.db.metadata by alembic --autogenerate, then reviewed.
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.Text(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_table('batteries',
    sa.Column('sn', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cabinet_id', sa.String(length=64), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('sn', name=op.f('pk_batteries'))
    )
    op.create_table('cabinet_events',
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=48), nullable=False),
    sa.Column('at_wall', sa.Float(), nullable=False),
    sa.Column('at_mono', sa.Float(), nullable=False),
    sa.Column('boot_id', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('cabinet_id', 'seq', name=op.f('pk_cabinet_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_cabinet_events_event_id'))
    )
    op.create_table('clock_anchors',
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('boot_id', sa.String(length=64), nullable=False),
    sa.Column('at_mono', sa.Float(), nullable=False),
    sa.Column('true_wall', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('cabinet_id', 'boot_id', name=op.f('pk_clock_anchors'))
    )
    op.create_table('journal_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('rental_id', sa.String(length=64), nullable=True),
    sa.Column('merchant_id', sa.Integer(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('corrects_entry_id', sa.Integer(), nullable=True),
    sa.Column('memo', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['corrects_entry_id'], ['journal_entries.id'], name=op.f('fk_journal_entries_corrects_entry_id_journal_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_entries')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_journal_entries_idempotency_key'))
    )
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journal_entries_merchant_id'), ['merchant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_journal_entries_rental_id'), ['rental_id'], unique=False)

    op.create_table('login_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_failures_key'), ['key'], unique=False)

    op.create_table('merchants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('revenue_share_bp', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('timezone', sa.String(length=64), server_default='UTC', nullable=False),
    sa.Column('default_tariff_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.CheckConstraint('revenue_share_bp between 0 and 10000', name=op.f('ck_merchants_share_bp')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_merchants'))
    )
    op.create_table('orphan_returns',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('battery_sn', sa.String(length=64), nullable=False),
    sa.Column('at_wall', sa.Float(), nullable=False),
    sa.Column('at_mono', sa.Float(), nullable=False),
    sa.Column('boot_id', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('matched_rental_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_orphan_returns'))
    )
    with op.batch_alter_table('orphan_returns', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orphan_returns_battery_sn'), ['battery_sn'], unique=False)

    op.create_table('sandbox_holds',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('card_token', sa.Text(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('captured', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('refunded', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sandbox_holds'))
    )
    op.create_table('sandbox_requests',
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('operation', sa.String(length=16), nullable=False),
    sa.Column('request', sa.Text(), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('idempotency_key', name=op.f('pk_sandbox_requests'))
    )
    op.create_table('sandbox_webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('deliver_at', sa.Float(), nullable=False),
    sa.Column('delivered_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sandbox_webhooks'))
    )
    with op.batch_alter_table('sandbox_webhooks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sandbox_webhooks_deliver_at'), ['deliver_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('password_hash', sa.Text(), nullable=True),
    sa.Column('role', sa.String(length=16), server_default='renter', nullable=False),
    sa.Column('card_token', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('deleted_at', sa.Float(), nullable=True),
    sa.CheckConstraint("role in ('renter', 'operator')", name=op.f('ck_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('webhooks_received',
    sa.Column('event_id', sa.String(length=100), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_webhooks_received'))
    )
    op.create_table('journal_postings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=False),
    sa.Column('account', sa.String(length=120), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entries.id'], name=op.f('fk_journal_postings_entry_id_journal_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_postings'))
    )
    with op.batch_alter_table('journal_postings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journal_postings_account'), ['account'], unique=False)
        batch_op.create_index(batch_op.f('ix_journal_postings_entry_id'), ['entry_id'], unique=False)

    op.create_table('passes',
    sa.Column('pass_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('issued_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('max_rentals', sa.Integer(), nullable=False),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_passes_user_id_users')),
    sa.PrimaryKeyConstraint('pass_id', name=op.f('pk_passes'))
    )
    with op.batch_alter_table('passes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_passes_user_id'), ['user_id'], unique=False)

    op.create_table('sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_sessions'))
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sessions_user_id'), ['user_id'], unique=False)

    op.create_table('tariffs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_tariffs_merchant_id_merchants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tariffs'))
    )
    op.create_table('venues',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('address', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_venues_merchant_id_merchants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_venues'))
    )
    with op.batch_alter_table('venues', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_venues_merchant_id'), ['merchant_id'], unique=False)

    op.create_table('cabinets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('venue_id', sa.Integer(), nullable=True),
    sa.Column('tariff_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('cmd_counter', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['tariff_id'], ['tariffs.id'], name=op.f('fk_cabinets_tariff_id_tariffs')),
    sa.ForeignKeyConstraint(['venue_id'], ['venues.id'], name=op.f('fk_cabinets_venue_id_venues')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cabinets'))
    )
    with op.batch_alter_table('cabinets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cabinets_venue_id'), ['venue_id'], unique=False)

    op.create_table('commands',
    sa.Column('cmd_id', sa.String(length=64), nullable=False),
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('counter', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('args', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('result', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['cabinet_id'], ['cabinets.id'], name=op.f('fk_commands_cabinet_id_cabinets')),
    sa.PrimaryKeyConstraint('cmd_id', name=op.f('pk_commands')),
    sa.UniqueConstraint('cabinet_id', 'counter', name=op.f('uq_commands_cabinet_id_counter'))
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_commands_cabinet_id'), ['cabinet_id'], unique=False)

    op.create_table('rentals',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('pass_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('merchant_id', sa.Integer(), nullable=True),
    sa.Column('share_bp', sa.Integer(), server_default='0', nullable=False),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.Column('battery_sn', sa.String(length=64), nullable=True),
    sa.Column('cmd_id', sa.String(length=64), nullable=True),
    sa.Column('tariff', sa.Text(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('start_event_id', sa.String(length=64), nullable=True),
    sa.Column('start_wall', sa.Float(), nullable=True),
    sa.Column('start_mono', sa.Float(), nullable=True),
    sa.Column('start_boot_id', sa.String(length=64), nullable=True),
    sa.Column('end_cabinet_id', sa.String(length=64), nullable=True),
    sa.Column('end_event_id', sa.String(length=64), nullable=True),
    sa.Column('end_wall', sa.Float(), nullable=True),
    sa.Column('end_mono', sa.Float(), nullable=True),
    sa.Column('end_boot_id', sa.String(length=64), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('duration_method', sa.String(length=16), nullable=True),
    sa.Column('fee', sa.BigInteger(), nullable=True),
    sa.Column('hold_amount', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('hold_ref', sa.String(length=64), nullable=True),
    sa.Column('hold_status', sa.String(length=16), nullable=True),
    sa.Column('hold_expires_at', sa.Float(), nullable=True),
    sa.Column('captured', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('refunded', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('payment_status', sa.String(length=16), server_default='none', nullable=False),
    sa.Column('abort_reason', sa.Text(), nullable=True),
    sa.CheckConstraint("source in ('app', 'pass')", name=op.f('ck_rentals_source')),
    sa.CheckConstraint("status in ('pending', 'active', 'closed', 'purchased', 'aborted')", name=op.f('ck_rentals_status')),
    sa.CheckConstraint('captured >= 0 and refunded >= 0 and refunded <= captured', name=op.f('ck_rentals_money')),
    sa.ForeignKeyConstraint(['cabinet_id'], ['cabinets.id'], name=op.f('fk_rentals_cabinet_id_cabinets')),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_rentals_merchant_id_merchants')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rentals_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rentals'))
    )
    with op.batch_alter_table('rentals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rentals_battery_sn'), ['battery_sn'], unique=False)
        batch_op.create_index(batch_op.f('ix_rentals_cabinet_id'), ['cabinet_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rentals_user_id'), ['user_id'], unique=False)
        batch_op.create_index('uq_rentals_one_open_app_rental', ['user_id'], unique=True, sqlite_where=sa.text("status in ('pending', 'active') and source = 'app'"), postgresql_where=sa.text("status in ('pending', 'active') and source = 'app'"))

    op.create_table('payments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rental_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_ref', sa.String(length=64), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['rental_id'], ['rentals.id'], name=op.f('fk_payments_rental_id_rentals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_payments_idempotency_key'))
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payments_rental_id'), ['rental_id'], unique=False)



def downgrade() -> None:
    # Generated from cloud.db.metadata by alembic --autogenerate, then reviewed.
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payments_rental_id'))

    op.drop_table('payments')
    with op.batch_alter_table('rentals', schema=None) as batch_op:
        batch_op.drop_index('uq_rentals_one_open_app_rental', sqlite_where=sa.text("status in ('pending', 'active') and source = 'app'"), postgresql_where=sa.text("status in ('pending', 'active') and source = 'app'"))
        batch_op.drop_index(batch_op.f('ix_rentals_user_id'))
        batch_op.drop_index(batch_op.f('ix_rentals_cabinet_id'))
        batch_op.drop_index(batch_op.f('ix_rentals_battery_sn'))

    op.drop_table('rentals')
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_commands_cabinet_id'))

    op.drop_table('commands')
    with op.batch_alter_table('cabinets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cabinets_venue_id'))

    op.drop_table('cabinets')
    with op.batch_alter_table('venues', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_venues_merchant_id'))

    op.drop_table('venues')
    op.drop_table('tariffs')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sessions_user_id'))

    op.drop_table('sessions')
    with op.batch_alter_table('passes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_passes_user_id'))

    op.drop_table('passes')
    with op.batch_alter_table('journal_postings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journal_postings_entry_id'))
        batch_op.drop_index(batch_op.f('ix_journal_postings_account'))

    op.drop_table('journal_postings')
    op.drop_table('webhooks_received')
    op.drop_table('users')
    with op.batch_alter_table('sandbox_webhooks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sandbox_webhooks_deliver_at'))

    op.drop_table('sandbox_webhooks')
    op.drop_table('sandbox_requests')
    op.drop_table('sandbox_holds')
    with op.batch_alter_table('orphan_returns', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orphan_returns_battery_sn'))

    op.drop_table('orphan_returns')
    op.drop_table('merchants')
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_failures_key'))

    op.drop_table('login_failures')
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journal_entries_rental_id'))
        batch_op.drop_index(batch_op.f('ix_journal_entries_merchant_id'))

    op.drop_table('journal_entries')
    op.drop_table('clock_anchors')
    op.drop_table('cabinet_events')
    op.drop_table('batteries')
    op.drop_table('audit_log')
